package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// exerciseDashboard runs the tests of the counts and summaries the
// dashboard reads.
func exerciseDashboard(t *testing.T, setup func(t *testing.T) (store.Store, context.Context)) {
	t.Helper()

	// createJob creates a job with one task per role, each in status.
	createJob := func(t *testing.T, q store.Querier, job store.Job, taskStatus string, roles ...string) (store.Job, []store.Task) {
		t.Helper()
		ctx := context.Background()
		var tasks []store.Task
		for i, role := range roles {
			tasks = append(tasks, store.Task{Key: fmt.Sprint(i), Role: role, Status: taskStatus})
		}
		job, _, err := q.JobCreate(ctx, store.JobCreateParams{Job: job, Tasks: tasks})
		require.NoError(t, err)
		got, err := q.TaskListByJob(ctx, job.ID)
		require.NoError(t, err)
		return job, got
	}

	t.Run("JobCountByStatus", func(t *testing.T) {
		t.Parallel()

		t.Run("EmptyDatabase", func(t *testing.T) {
			s, ctx := setup(t)
			counts, err := s.JobCountByStatus(ctx)
			require.NoError(t, err)
			require.NotNil(t, counts)
			require.Empty(t, counts)
		})

		t.Run("CountsEveryStatus", func(t *testing.T) {
			s, ctx := setup(t)
			var running []store.Job
			for status, n := range map[string]int{
				schemas.JobPlanning: 1, schemas.JobRunning: 3, schemas.JobDone: 2, schemas.JobBudgetExceeded: 1,
			} {
				for range n {
					job, _ := createJob(t, s, store.Job{Title: status, Status: status}, schemas.TaskQueued, "pm")
					if status == schemas.JobRunning {
						running = append(running, job)
					}
				}
			}
			counts, err := s.JobCountByStatus(ctx)
			require.NoError(t, err)
			require.Equal(t, map[string]int{
				schemas.JobPlanning: 1, schemas.JobRunning: 3, schemas.JobDone: 2, schemas.JobBudgetExceeded: 1,
			}, counts)

			// A status change moves the job from one count to another; a
			// status nobody has left is gone. Inside a transaction the
			// counts follow its writes; after a rollback they are back.
			errRollback := errors.New("rollback")
			err = s.InTx(ctx, func(q store.Querier) error {
				moved, err := q.JobSetStatus(ctx, store.JobSetStatusParams{ID: running[0].ID, To: schemas.JobFailed})
				require.NoError(t, err)
				require.True(t, moved)
				counts, err := q.JobCountByStatus(ctx)
				require.NoError(t, err)
				require.Equal(t, map[string]int{
					schemas.JobPlanning: 1, schemas.JobRunning: 2, schemas.JobDone: 2, schemas.JobBudgetExceeded: 1,
					schemas.JobFailed: 1,
				}, counts)
				return errRollback
			})
			require.ErrorIs(t, err, errRollback)
			for _, job := range running {
				moved, err := s.JobSetStatus(ctx, store.JobSetStatusParams{ID: job.ID, To: schemas.JobDone})
				require.NoError(t, err)
				require.True(t, moved)
			}
			counts, err = s.JobCountByStatus(ctx)
			require.NoError(t, err)
			require.Equal(t, map[string]int{
				schemas.JobPlanning: 1, schemas.JobDone: 5, schemas.JobBudgetExceeded: 1,
			}, counts)
		})
	})

	t.Run("TaskCountByRoleStatus", func(t *testing.T) {
		t.Parallel()

		t.Run("EmptyDatabase", func(t *testing.T) {
			s, ctx := setup(t)
			counts, err := s.TaskCountByRoleStatus(ctx)
			require.NoError(t, err)
			require.NotNil(t, counts)
			require.Empty(t, counts)
		})

		t.Run("CountsAndOrders", func(t *testing.T) {
			s, ctx := setup(t)
			mk := func(key, role, status string) store.Task { return store.Task{Key: key, Role: role, Status: status} }
			for _, tasks := range [][]store.Task{
				{
					mk("a", "tester", schemas.TaskPending),
					mk("b", "developer", schemas.TaskRunning),
					mk("c", "developer", schemas.TaskPromoted),
					mk("d", "pm", schemas.TaskPromoted),
					// Bytewise: upper case before lower case, a role
					// before the roles it is a prefix of.
					mk("e", "Ops", schemas.TaskQueued),
					mk("f", "qa_lead", schemas.TaskQueued),
				},
				{
					mk("a", "developer", schemas.TaskRunning),
					mk("b", "developer", schemas.TaskAwaitingReview),
					mk("c", "pm", schemas.TaskPromoted),
					mk("d", "qa", schemas.TaskFailed),
				},
			} {
				_, _, err := s.JobCreate(ctx, store.JobCreateParams{Job: store.Job{Title: "t", Status: schemas.JobRunning}, Tasks: tasks})
				require.NoError(t, err)
			}
			counts, err := s.TaskCountByRoleStatus(ctx)
			require.NoError(t, err)
			require.Equal(t, []store.RoleStatusCount{
				{Role: "Ops", Status: schemas.TaskQueued, Count: 1},
				{Role: "developer", Status: schemas.TaskAwaitingReview, Count: 1},
				{Role: "developer", Status: schemas.TaskPromoted, Count: 1},
				{Role: "developer", Status: schemas.TaskRunning, Count: 2},
				{Role: "pm", Status: schemas.TaskPromoted, Count: 2},
				{Role: "qa", Status: schemas.TaskFailed, Count: 1},
				{Role: "qa_lead", Status: schemas.TaskQueued, Count: 1},
				{Role: "tester", Status: schemas.TaskPending, Count: 1},
			}, counts)
		})
	})

	t.Run("OutputCount", func(t *testing.T) {
		t.Parallel()

		t.Run("EmptyDatabase", func(t *testing.T) {
			s, ctx := setup(t)
			for _, f := range [][2]string{{"", ""}, {schemas.OutputAwaitingReview, ""}, {"", "developer"}} {
				n, err := s.OutputCount(ctx, f[0], f[1])
				require.NoError(t, err)
				require.Zero(t, n)
			}
		})

		t.Run("ByStatusAndRole", func(t *testing.T) {
			s, ctx := setup(t)
			dev, tester := newTaskWithRole(t, s, "developer"), newTaskWithRole(t, s, "tester")
			stage := func(task store.Task, rev int, status string) store.Output {
				out, _, err := s.OutputStage(ctx, store.Output{
					TaskID: task.ID, JobID: task.JobID, Role: task.Role, Revision: rev, Status: status,
				})
				require.NoError(t, err)
				return out
			}
			stage(dev, 0, schemas.OutputRejected)
			waiting := stage(dev, 1, schemas.OutputAwaitingReview)
			stage(dev, 2, schemas.OutputStaged)
			stage(tester, 0, schemas.OutputAwaitingReview)
			stage(tester, 1, schemas.OutputPromoted)

			for _, tt := range []struct {
				name, status, role string
				want               int
			}{
				{"All", "", "", 5},
				{"Status", schemas.OutputAwaitingReview, "", 2},
				{"Role", "", "developer", 3},
				{"StatusAndRole", schemas.OutputAwaitingReview, "tester", 1},
				{"StatusOfNoOutput", schemas.OutputCancelled, "", 0},
				{"RoleWithoutOutputs", "", "pm", 0},
				{"StatusNotOfTheRole", schemas.OutputPromoted, "developer", 0},
			} {
				n, err := s.OutputCount(ctx, tt.status, tt.role)
				require.NoError(t, err, tt.name)
				require.Equal(t, tt.want, n, tt.name)
			}

			moved, err := s.OutputSetStatus(ctx, store.OutputSetStatusParams{ID: waiting.ID, From: []string{schemas.OutputAwaitingReview}, To: schemas.OutputPromoted})
			require.NoError(t, err)
			require.True(t, moved)
			n, err := s.OutputCount(ctx, schemas.OutputAwaitingReview, "")
			require.NoError(t, err)
			require.Equal(t, 1, n)
			n, err = s.OutputCount(ctx, schemas.OutputPromoted, "developer")
			require.NoError(t, err)
			require.Equal(t, 1, n)
		})
	})

	t.Run("DeadLetterCount", func(t *testing.T) {
		t.Parallel()

		t.Run("EmptyDatabase", func(t *testing.T) {
			s, ctx := setup(t)
			for _, status := range []string{"", schemas.DeadLetterOpen} {
				n, err := s.DeadLetterCount(ctx, status)
				require.NoError(t, err)
				require.Zero(t, n)
			}
		})

		t.Run("ByStatus", func(t *testing.T) {
			s, ctx := setup(t)
			var open []string
			for _, status := range []string{"", "", schemas.DeadLetterOpen, schemas.DeadLetterReplayed,
				schemas.DeadLetterDiscarded, schemas.DeadLetterDiscarded} {
				d := store.DeadLetter{ID: uuid.NewString(), Source: "worker", Status: status}
				created, err := s.DeadLetterInsert(ctx, d)
				require.NoError(t, err)
				require.True(t, created)
				if status == "" || status == schemas.DeadLetterOpen {
					open = append(open, d.ID)
				}
			}
			count := func(status string) int {
				t.Helper()
				n, err := s.DeadLetterCount(ctx, status)
				require.NoError(t, err)
				return n
			}
			require.Equal(t, 6, count(""))
			require.Equal(t, 3, count(schemas.DeadLetterOpen), "an insert without a status is open")
			require.Equal(t, 1, count(schemas.DeadLetterReplayed))
			require.Equal(t, 2, count(schemas.DeadLetterDiscarded))
			require.Equal(t, 0, count("nope"))

			moved, err := s.DeadLetterResolve(ctx, open[0], schemas.DeadLetterReplayed, "alice")
			require.NoError(t, err)
			require.True(t, moved)
			require.Equal(t, 2, count(schemas.DeadLetterOpen))
			require.Equal(t, 2, count(schemas.DeadLetterReplayed))
			require.Equal(t, 6, count(""))
		})
	})

	t.Run("RoleStats", func(t *testing.T) {
		t.Parallel()

		t.Run("EmptyDatabase", func(t *testing.T) {
			s, ctx := setup(t)
			stats, err := s.RoleStats(ctx, time.Time{})
			require.NoError(t, err)
			require.NotNil(t, stats)
			require.Empty(t, stats)
		})

		t.Run("SummarisesEachRoleWithTasks", func(t *testing.T) {
			s, ctx := setup(t)
			since := at(100)
			_, devs := createJob(t, s, store.Job{Title: "a", Status: schemas.JobRunning}, schemas.TaskPromoted,
				"developer", "developer", "pm")
			_, more := createJob(t, s, store.Job{Title: "b", Status: schemas.JobRunning}, schemas.TaskRunning,
				"developer", "pm", "writer")
			for _, u := range []struct {
				task   store.Task
				status string
			}{
				{more[0], schemas.TaskFailed},
				{more[1], schemas.TaskCancelled},
			} {
				changed, err := s.TaskUpdate(ctx, store.TaskUpdateParams{ID: u.task.ID, Status: ptr(u.status)})
				require.NoError(t, err)
				require.True(t, changed)
			}
			_, devs2 := createJob(t, s, store.Job{Title: "c", Status: schemas.JobDone}, schemas.TaskCancelled, "developer")

			stage := func(task store.Task, role string, rev int, status string, latencyMS int64) {
				t.Helper()
				_, _, err := s.OutputStage(ctx, store.Output{
					TaskID: task.ID, JobID: task.JobID, Role: role, Revision: rev, Status: status, LatencyMS: latencyMS,
				})
				require.NoError(t, err)
			}
			// developer: promoted first time, promoted after a revision,
			// rejected, cancelled.
			stage(devs[0], "developer", 0, schemas.OutputPromoted, 100)
			stage(devs[1], "developer", 0, schemas.OutputRejected, 200)
			stage(devs[1], "developer", 1, schemas.OutputPromoted, 250)
			stage(devs2[0], "developer", 0, schemas.OutputCancelled, 1)
			// pm: one promoted after two revisions.
			stage(devs[2], "pm", 2, schemas.OutputPromoted, 30)
			// An output of a role without tasks is not a role of its own.
			stage(more[2], "ghost", 0, schemas.OutputPromoted, 5)

			require.NoError(t, s.LessonInsert(ctx, []store.Lesson{
				{Text: "too old", Scope: "developer", CreatedAt: since.Add(-time.Microsecond)},
				{Text: "just in time", Scope: "developer", CreatedAt: since},
				{Text: "later", Scope: "developer", CreatedAt: at(200)},
				{Text: "for everyone", Scope: "all", CreatedAt: at(200)},
				{Text: "plan", Scope: "pm", CreatedAt: at(150)},
				{Text: "no tasks", Scope: "tester", CreatedAt: at(150)},
			}))

			stats, err := s.RoleStats(ctx, since)
			require.NoError(t, err)
			require.Equal(t, []store.RoleStat{
				{Role: "developer", Tasks: 4, Done: 2, Failed: 1, Cancelled: 1, Promoted: 2, FirstPass: 1,
					MeanOutputMS: float64(100+200+250+1) / 4, Lessons: 2},
				{Role: "pm", Tasks: 2, Done: 1, Cancelled: 1, Promoted: 1, MeanOutputMS: 30, Lessons: 1},
				{Role: "writer", Tasks: 1},
			}, stats)

			// Lessons are counted from the time asked for.
			stats, err = s.RoleStats(ctx, time.Time{})
			require.NoError(t, err)
			require.Equal(t, 3, stats[0].Lessons)
			stats, err = s.RoleStats(ctx, at(300))
			require.NoError(t, err)
			require.Zero(t, stats[0].Lessons)
			require.Zero(t, stats[1].Lessons)
		})

		t.Run("InTx", func(t *testing.T) {
			s, ctx := setup(t)
			errRollback := errors.New("rollback")
			err := s.InTx(ctx, func(q store.Querier) error {
				_, tasks := createJob(t, q, store.Job{Title: "tx", Status: schemas.JobRunning}, schemas.TaskPromoted, "pm")
				_, _, err := q.OutputStage(ctx, store.Output{TaskID: tasks[0].ID, JobID: tasks[0].JobID, Role: "pm",
					Status: schemas.OutputPromoted, LatencyMS: 9})
				require.NoError(t, err)
				stats, err := q.RoleStats(ctx, time.Time{})
				require.NoError(t, err)
				require.Equal(t, []store.RoleStat{{Role: "pm", Tasks: 1, Done: 1, Promoted: 1, FirstPass: 1, MeanOutputMS: 9}}, stats)
				return errRollback
			})
			require.ErrorIs(t, err, errRollback)
			stats, err := s.RoleStats(ctx, time.Time{})
			require.NoError(t, err)
			require.Empty(t, stats)
		})
	})

	t.Run("JobsFinished", func(t *testing.T) {
		t.Parallel()

		// since returns a start d before now, to the microsecond as the
		// store keeps times, in a zone other than UTC: the store answers in
		// UTC whatever it is given.
		since := func(d time.Duration) time.Time {
			return time.Now().Add(-d).Truncate(time.Microsecond).In(time.FixedZone("UTC+1", 3600))
		}
		starts := func(buckets []store.JobBucket) []time.Time {
			var out []time.Time
			for _, b := range buckets {
				out = append(out, b.Start)
			}
			return out
		}

		t.Run("EmptyDatabase", func(t *testing.T) {
			s, ctx := setup(t)
			from := since(150 * time.Minute)
			buckets, err := s.JobsFinished(ctx, from, time.Hour)
			require.NoError(t, err)
			u := from.UTC()
			require.Equal(t, []store.JobBucket{
				{Start: u}, {Start: u.Add(time.Hour)}, {Start: u.Add(2 * time.Hour)},
			}, buckets)
		})

		t.Run("CountsByBucketAndStatus", func(t *testing.T) {
			s, ctx := setup(t)
			from := since(150 * time.Minute)
			finished := func(status string, d time.Duration) {
				t.Helper()
				_, _, err := s.JobCreate(ctx, store.JobCreateParams{Job: store.Job{
					Title: status, Status: status, CreatedAt: from.Add(-time.Hour), UpdatedAt: from.Add(d),
				}})
				require.NoError(t, err)
			}
			finished(schemas.JobDone, 0) // the first bucket holds its start
			finished(schemas.JobFailed, 10*time.Minute)
			finished(schemas.JobFailed, 59*time.Minute+59*time.Second)
			finished(schemas.JobDone, time.Hour) // the second holds its start
			finished(schemas.JobCancelled, 70*time.Minute)
			finished(schemas.JobDone, 130*time.Minute)
			// Not counted: before since, after the last bucket, not finished.
			finished(schemas.JobDone, -time.Microsecond)
			finished(schemas.JobDone, 4*time.Hour)
			finished(schemas.JobRunning, 10*time.Minute)
			finished(schemas.JobPlanning, 10*time.Minute)
			finished(schemas.JobBudgetExceeded, 10*time.Minute)

			buckets, err := s.JobsFinished(ctx, from, time.Hour)
			require.NoError(t, err)
			u := from.UTC()
			require.Equal(t, []store.JobBucket{
				{Start: u, Done: 1, Failed: 2},
				{Start: u.Add(time.Hour), Done: 1, Cancelled: 1},
				{Start: u.Add(2 * time.Hour), Done: 1},
			}, buckets)

			// A job that finishes now lands in the last bucket.
			job, _ := createJob(t, s, store.Job{Title: "now", Status: schemas.JobRunning, CreatedAt: from}, schemas.TaskRunning, "pm")
			moved, err := s.JobSetStatus(ctx, store.JobSetStatusParams{ID: job.ID, To: schemas.JobCancelled})
			require.NoError(t, err)
			require.True(t, moved)
			buckets, err = s.JobsFinished(ctx, from, time.Hour)
			require.NoError(t, err)
			require.Equal(t, store.JobBucket{Start: u.Add(2 * time.Hour), Done: 1, Cancelled: 1}, buckets[2])

			// Narrower buckets split the same jobs; now is past 150
			// minutes, so a sixth bucket holds it.
			buckets, err = s.JobsFinished(ctx, from, 30*time.Minute)
			require.NoError(t, err)
			require.Equal(t, []store.JobBucket{
				{Start: u, Done: 1, Failed: 1},
				{Start: u.Add(30 * time.Minute), Failed: 1},
				{Start: u.Add(60 * time.Minute), Done: 1, Cancelled: 1},
				{Start: u.Add(90 * time.Minute)},
				{Start: u.Add(120 * time.Minute), Done: 1},
				{Start: u.Add(150 * time.Minute), Cancelled: 1},
			}, buckets)
		})

		t.Run("Buckets", func(t *testing.T) {
			s, ctx := setup(t)
			for _, tt := range []struct {
				name   string
				since  time.Duration // before now
				bucket time.Duration
				want   int
			}{
				// The last bucket is the one that holds now.
				{"WidthDividesTheSpan", 90 * time.Minute, 30 * time.Minute, 4},
				{"WidthDoesNotDivide", 150 * time.Minute, 45 * time.Minute, 4},
				{"OneBucketWiderThanTheSpan", time.Minute, 24 * time.Hour, 1},
				{"SinceIsNow", 0, time.Hour, 1},
				{"SinceInTheFuture", -time.Hour, time.Hour, 0},
				{"UpToTheMaximum", time.Duration(store.MaxJobBuckets-1) * time.Second, time.Second, store.MaxJobBuckets},
			} {
				from := since(tt.since)
				buckets, err := s.JobsFinished(ctx, from, tt.bucket)
				require.NoError(t, err, tt.name)
				require.NotNil(t, buckets, tt.name)
				require.Len(t, buckets, tt.want, tt.name)
				for i, start := range starts(buckets) {
					require.Equal(t, from.UTC().Add(time.Duration(i)*tt.bucket), start, tt.name)
				}
			}

			for _, tt := range []struct {
				name   string
				since  time.Duration
				bucket time.Duration
			}{
				{"ZeroWidth", time.Hour, 0},
				{"NegativeWidth", time.Hour, -time.Minute},
				{"WidthUnderAMicrosecond", time.Hour, 500 * time.Nanosecond},
				{"TooManyBuckets", 2 * time.Hour, 100 * time.Millisecond},
				{"SinceTheBeginningOfTime", 0, time.Hour},
			} {
				from := since(tt.since)
				if tt.name == "SinceTheBeginningOfTime" {
					from = time.Time{}
				}
				_, err := s.JobsFinished(ctx, from, tt.bucket)
				require.Error(t, err, tt.name)
			}
		})
	})
}
