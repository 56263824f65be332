// Package storetest is the conformance suite of store.Store: every driver
// runs Exercise, so every driver behaves the same way.
package storetest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/schemas"
	"github.com/troupe-dev/troupe/store"
)

// base is a time in the past that tests count from, so that rows they
// write have distinct, known creation times.
var base = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

// at returns base plus n seconds.
func at(n int) time.Time { return base.Add(time.Duration(n) * time.Second) }

// Exercise runs the suite. newStore is called once per subtest and must
// return an empty, migrated store that is closed when the test ends.
func Exercise(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Helper()

	// setup is each subtest's start: parallel, with a store of its own.
	setup := func(t *testing.T) (store.Store, context.Context) {
		t.Helper()
		t.Parallel()
		return newStore(t), context.Background()
	}

	t.Run("OutboxDirect", func(t *testing.T) {
		st, ctx := setup(t)
		outboxDirect(t, ctx, st)
	})

	t.Run("JobListStale", func(t *testing.T) {
		st, ctx := setup(t)
		jobListStale(t, ctx, st)
	})

	t.Run("MustChange", func(t *testing.T) {
		st, ctx := setup(t)
		mustChange(t, ctx, st)
	})

	t.Run("JobGetWithTasks", func(t *testing.T) {
		st, ctx := setup(t)
		jobGetWithTasks(t, ctx, st)
	})

	t.Run("TaskInsert", func(t *testing.T) {
		st, ctx := setup(t)
		job := store.Job{ID: uuid.NewString(), Title: "planned later", Status: schemas.JobPlanning}
		_, _, err := st.JobCreate(ctx, store.JobCreateParams{Job: job})
		require.NoError(t, err)
		require.NoError(t, st.TaskInsert(ctx, job.ID, []store.Task{
			{ID: uuid.NewString(), Key: "b", Role: "pm", Status: schemas.TaskQueued},
			{ID: uuid.NewString(), Key: "a", Role: "developer", Status: schemas.TaskPending, DependsOn: []string{"b"}},
		}))
		require.NoError(t, st.TaskInsert(ctx, job.ID, []store.Task{{ID: uuid.NewString(), Key: "c", Role: "writer", Status: schemas.TaskPending}}))
		tasks, err := st.TaskListByJob(ctx, job.ID)
		require.NoError(t, err)
		var keys []string
		for _, task := range tasks {
			keys = append(keys, task.Key)
			require.Equal(t, job.ID, task.JobID)
		}
		require.Equal(t, []string{"b", "a", "c"}, keys, "in the order they were added")
		require.Equal(t, []string{"b"}, tasks[1].DependsOn)
		err = st.TaskInsert(ctx, "no-such-job", []store.Task{{ID: uuid.NewString(), Key: "x", Role: "pm", Status: schemas.TaskQueued}})
		require.ErrorIs(t, err, store.ErrNotFound)
		err = st.TaskInsert(ctx, job.ID, []store.Task{{ID: uuid.NewString(), Key: "b", Role: "pm", Status: schemas.TaskQueued}})
		require.Error(t, err, "keys stay unique per job")
	})

	t.Run("Lifecycle", func(t *testing.T) {
		t.Parallel()
		t.Run("PingAnswers", func(t *testing.T) {
			s, ctx := setup(t)
			require.NoError(t, s.Ping(ctx))
		})
		t.Run("MigrateTwiceIsNoop", func(t *testing.T) {
			s, ctx := setup(t)
			require.NoError(t, s.Migrate(ctx))
			require.NoError(t, s.Migrate(ctx))
			_, _, err := s.JobCreate(ctx, store.JobCreateParams{Job: store.Job{Title: "t", Status: schemas.JobRunning}})
			require.NoError(t, err)
		})
	})

	t.Run("JobCreate", func(t *testing.T) {
		t.Parallel()

		t.Run("InsertsJobAndTasks", func(t *testing.T) {
			s, ctx := setup(t)
			in := store.Job{
				ID:             uuid.NewString(),
				Title:          "Build a CLI",
				Brief:          "a brief",
				IdempotencyKey: "key-1",
				Status:         schemas.JobPlanning,
				Reason:         "why",
				BudgetTokens:   12345,
				Attachments: []schemas.Attachment{
					{Name: "a.png", MediaType: "image/png", Data: "aGVsbG8="},
					{Name: "b.txt", MediaType: "text/plain", Data: ""},
				},
				CreatedAt: at(0),
				UpdatedAt: at(1),
			}
			tasks := []store.Task{
				{Key: "plan", Role: "pm", Instructions: "plan it", Status: schemas.TaskQueued},
				{Key: "design", Role: "architect", DependsOn: []string{"plan"}, Status: schemas.TaskPending},
				{Key: "build", Role: "developer", DependsOn: []string{"plan", "design"}, Status: schemas.TaskPending,
					Revision: 2, Attempts: 3, Reason: "r", Feedback: "f"},
			}
			job, created, err := s.JobCreate(ctx, store.JobCreateParams{Job: in, Tasks: tasks})
			require.NoError(t, err)
			require.True(t, created)
			require.Equal(t, in, job)

			got, err := s.JobGetByID(ctx, in.ID)
			require.NoError(t, err)
			require.Equal(t, in, got)

			gotTasks, err := s.TaskListByJob(ctx, in.ID)
			require.NoError(t, err)
			require.Len(t, gotTasks, 3)
			for i, task := range gotTasks {
				want := tasks[i]
				require.NotEmpty(t, task.ID)
				want.ID = task.ID
				want.JobID = in.ID
				want.CreatedAt = in.CreatedAt // a task without a time takes its job's
				want.UpdatedAt = in.CreatedAt
				require.Equal(t, want, task)

				byID, err := s.TaskGetByID(ctx, task.ID)
				require.NoError(t, err)
				require.Equal(t, task, byID)
			}
		})

		t.Run("FillsIDAndTimes", func(t *testing.T) {
			s, ctx := setup(t)
			before := time.Now()
			job, created, err := s.JobCreate(ctx, store.JobCreateParams{
				Job:   store.Job{Title: "t", Status: schemas.JobPlanning},
				Tasks: []store.Task{{Key: "a", Role: "pm", Status: schemas.TaskQueued}},
			})
			require.NoError(t, err)
			after := time.Now()
			require.True(t, created)
			_, err = uuid.Parse(job.ID)
			require.NoError(t, err)
			require.Equal(t, time.UTC, job.CreatedAt.Location())
			require.False(t, job.CreatedAt.Before(before.Truncate(time.Microsecond)))
			require.False(t, job.CreatedAt.After(after))
			require.Equal(t, job.CreatedAt, job.UpdatedAt)

			got, err := s.JobGetByID(ctx, job.ID)
			require.NoError(t, err)
			require.Equal(t, job, got)

			tasks, err := s.TaskListByJob(ctx, job.ID)
			require.NoError(t, err)
			require.Len(t, tasks, 1)
			_, err = uuid.Parse(tasks[0].ID)
			require.NoError(t, err)
			require.Equal(t, job.CreatedAt, tasks[0].CreatedAt)
		})

		t.Run("IdempotencyKeyReturnsExisting", func(t *testing.T) {
			s, ctx := setup(t)
			first, created, err := s.JobCreate(ctx, store.JobCreateParams{
				Job:   store.Job{Title: "first", IdempotencyKey: "k", Status: schemas.JobPlanning},
				Tasks: []store.Task{{Key: "a", Role: "pm", Status: schemas.TaskQueued}},
			})
			require.NoError(t, err)
			require.True(t, created)

			second, created, err := s.JobCreate(ctx, store.JobCreateParams{
				Job:   store.Job{Title: "second", IdempotencyKey: "k", Status: schemas.JobRunning},
				Tasks: []store.Task{{Key: "b", Role: "pm"}, {Key: "c", Role: "pm"}},
			})
			require.NoError(t, err)
			require.False(t, created)
			require.Equal(t, first, second)

			jobs, err := s.JobList(ctx, store.JobListParams{})
			require.NoError(t, err)
			require.Len(t, jobs, 1)
			tasks, err := s.TaskListByJob(ctx, first.ID)
			require.NoError(t, err)
			require.Len(t, tasks, 1)
		})

		t.Run("IdempotencyKeyRace", func(t *testing.T) {
			s, ctx := setup(t)
			const n = 12
			var (
				wg      sync.WaitGroup
				start   = make(chan struct{})
				jobs    = make([]store.Job, n)
				created = make([]bool, n)
				errs    = make([]error, n)
			)
			for i := range n {
				wg.Go(func() {
					<-start
					jobs[i], created[i], errs[i] = s.JobCreate(ctx, store.JobCreateParams{
						Job: store.Job{Title: fmt.Sprintf("racer %d", i), IdempotencyKey: "race", Status: schemas.JobPlanning},
						Tasks: []store.Task{
							{Key: "a", Role: "pm", Status: schemas.TaskQueued},
							{Key: "b", Role: "developer", Status: schemas.TaskPending},
						},
					})
				})
			}
			close(start)
			wg.Wait()

			winners := 0
			for i := range n {
				require.NoError(t, errs[i])
				require.Equal(t, jobs[0].ID, jobs[i].ID)
				if created[i] {
					winners++
				}
			}
			require.Equal(t, 1, winners)

			all, err := s.JobList(ctx, store.JobListParams{})
			require.NoError(t, err)
			require.Len(t, all, 1)
			tasks, err := s.TaskListByJob(ctx, jobs[0].ID)
			require.NoError(t, err)
			require.Len(t, tasks, 2)
		})

		t.Run("EmptyIdempotencyKeyIsNotUnique", func(t *testing.T) {
			s, ctx := setup(t)
			a, created, err := s.JobCreate(ctx, store.JobCreateParams{Job: store.Job{Title: "a", Status: schemas.JobPlanning}})
			require.NoError(t, err)
			require.True(t, created)
			b, created, err := s.JobCreate(ctx, store.JobCreateParams{Job: store.Job{Title: "b", Status: schemas.JobPlanning}})
			require.NoError(t, err)
			require.True(t, created)
			require.NotEqual(t, a.ID, b.ID)
		})

		t.Run("DuplicateTaskKeyWritesNothing", func(t *testing.T) {
			s, ctx := setup(t)
			_, _, err := s.JobCreate(ctx, store.JobCreateParams{
				Job:   store.Job{Title: "dup", Status: schemas.JobPlanning},
				Tasks: []store.Task{{Key: "a", Role: "pm"}, {Key: "a", Role: "developer"}},
			})
			require.Error(t, err)
			jobs, err := s.JobList(ctx, store.JobListParams{})
			require.NoError(t, err)
			require.Empty(t, jobs)
		})
	})

	t.Run("JobGetByID", func(t *testing.T) {
		t.Parallel()
		t.Run("NotFound", func(t *testing.T) {
			s, ctx := setup(t)
			_, err := s.JobGetByID(ctx, uuid.NewString())
			require.ErrorIs(t, err, store.ErrNotFound)
		})
	})

	t.Run("JobLock", func(t *testing.T) {
		s, ctx := setup(t)
		job, _, err := s.JobCreate(ctx, store.JobCreateParams{Job: store.Job{Title: "locked", Status: schemas.JobRunning}})
		require.NoError(t, err)
		require.NoError(t, s.InTx(ctx, func(q store.Querier) error {
			got, err := q.JobLock(ctx, job.ID)
			require.NoError(t, err)
			require.Equal(t, "locked", got.Title)
			moved, err := q.JobSetStatus(ctx, store.JobSetStatusParams{ID: job.ID, From: []string{schemas.JobRunning}, To: schemas.JobCancelled})
			require.True(t, moved, "the lock is the transaction's own")
			return err
		}))
		err = s.InTx(ctx, func(q store.Querier) error {
			_, err := q.JobLock(ctx, uuid.NewString())
			return err
		})
		require.ErrorIs(t, err, store.ErrNotFound)
	})

	t.Run("JobList", func(t *testing.T) {
		t.Parallel()

		t.Run("PagesWithoutGapsOrDuplicates", func(t *testing.T) {
			s, ctx := setup(t)
			var want []store.Job
			for i := range 23 {
				// Three jobs per instant, so pages split ties.
				job, _, err := s.JobCreate(ctx, store.JobCreateParams{
					Job: store.Job{Title: fmt.Sprintf("job %d", i), Status: schemas.JobRunning, CreatedAt: at(i / 3)},
				})
				require.NoError(t, err)
				want = append(want, job)
			}
			sort.Slice(want, func(i, j int) bool {
				if !want[i].CreatedAt.Equal(want[j].CreatedAt) {
					return want[i].CreatedAt.After(want[j].CreatedAt)
				}
				return want[i].ID > want[j].ID
			})

			var got []store.Job
			p := store.JobListParams{Limit: 4}
			for pages := 0; ; pages++ {
				require.Less(t, pages, 10, "too many pages")
				page, err := s.JobList(ctx, p)
				require.NoError(t, err)
				require.LessOrEqual(t, len(page), 4)
				if len(page) == 0 {
					break
				}
				got = append(got, page...)
				last := page[len(page)-1]
				p.Before, p.BeforeID = last.CreatedAt, last.ID
			}
			require.Equal(t, want, got)
		})

		t.Run("BeforeWithoutID", func(t *testing.T) {
			s, ctx := setup(t)
			for i := range 4 {
				_, _, err := s.JobCreate(ctx, store.JobCreateParams{
					Job: store.Job{Title: fmt.Sprintf("job %d", i), Status: schemas.JobRunning, CreatedAt: at(i)},
				})
				require.NoError(t, err)
			}
			jobs, err := s.JobList(ctx, store.JobListParams{Before: at(2)})
			require.NoError(t, err)
			require.Equal(t, []string{"job 1", "job 0"}, jobTitles(jobs))
		})

		t.Run("LimitDefaultsTo50", func(t *testing.T) {
			s, ctx := setup(t)
			for i := range 52 {
				_, _, err := s.JobCreate(ctx, store.JobCreateParams{
					Job: store.Job{Title: fmt.Sprintf("job %d", i), Status: schemas.JobRunning, CreatedAt: at(i)},
				})
				require.NoError(t, err)
			}
			jobs, err := s.JobList(ctx, store.JobListParams{})
			require.NoError(t, err)
			require.Len(t, jobs, 50)
			require.Equal(t, "job 51", jobs[0].Title)
		})

		t.Run("FiltersByStatusAndQuery", func(t *testing.T) {
			s, ctx := setup(t)
			for i, j := range []struct{ title, status string }{
				{"Build the API", schemas.JobRunning},
				{"build a cli", schemas.JobDone},
				{"Write docs", schemas.JobRunning},
				{"100% done", schemas.JobDone},
				{"a_b", schemas.JobRunning},
				{"axb", schemas.JobRunning},
			} {
				_, _, err := s.JobCreate(ctx, store.JobCreateParams{
					Job: store.Job{Title: j.title, Status: j.status, CreatedAt: at(i)},
				})
				require.NoError(t, err)
			}
			for _, tt := range []struct {
				name string
				p    store.JobListParams
				want []string
			}{
				{"All", store.JobListParams{}, []string{"axb", "a_b", "100% done", "Write docs", "build a cli", "Build the API"}},
				{"Status", store.JobListParams{Status: schemas.JobDone}, []string{"100% done", "build a cli"}},
				{"QueryIgnoresCase", store.JobListParams{Query: "BUILD"}, []string{"build a cli", "Build the API"}},
				{"QueryAndStatus", store.JobListParams{Query: "build", Status: schemas.JobRunning}, []string{"Build the API"}},
				{"QueryPercentIsLiteral", store.JobListParams{Query: "%"}, []string{"100% done"}},
				{"QueryUnderscoreIsLiteral", store.JobListParams{Query: "_"}, []string{"a_b"}},
				{"NoMatch", store.JobListParams{Query: "nothing"}, nil},
			} {
				jobs, err := s.JobList(ctx, tt.p)
				require.NoError(t, err, tt.name)
				require.Equal(t, tt.want, jobTitles(jobs), tt.name)
			}
		})

		t.Run("FiltersByRole", func(t *testing.T) {
			s, ctx := setup(t)
			ids := map[string]string{}
			for i, j := range []struct {
				title, status string
				roles         []string
			}{
				{"plan only", schemas.JobDone, []string{"pm"}},
				{"full team", schemas.JobRunning, []string{"pm", "developer", "developer", "tester"}},
				{"dev finished", schemas.JobDone, []string{"developer"}},
				{"not planned", schemas.JobPlanning, nil},
				{"Build with dev", schemas.JobRunning, []string{"developer", "writer"}},
			} {
				var tasks []store.Task
				for k, role := range j.roles {
					tasks = append(tasks, store.Task{Key: fmt.Sprint(k), Role: role, Status: schemas.TaskQueued})
				}
				job, _, err := s.JobCreate(ctx, store.JobCreateParams{
					Job: store.Job{Title: j.title, Status: j.status, CreatedAt: at(i)}, Tasks: tasks,
				})
				require.NoError(t, err)
				ids[j.title] = job.ID
			}
			for _, tt := range []struct {
				name string
				p    store.JobListParams
				want []string
			}{
				{"NoRoleListsAll", store.JobListParams{},
					[]string{"Build with dev", "not planned", "dev finished", "full team", "plan only"}},
				{"OnceWithManyTasksOfTheRole", store.JobListParams{Role: "developer"},
					[]string{"Build with dev", "dev finished", "full team"}},
				{"OtherRole", store.JobListParams{Role: "pm"}, []string{"full team", "plan only"}},
				{"RoleAndStatus", store.JobListParams{Role: "developer", Status: schemas.JobRunning},
					[]string{"Build with dev", "full team"}},
				{"RoleAndQuery", store.JobListParams{Role: "developer", Query: "DEV"},
					[]string{"Build with dev", "dev finished"}},
				{"RoleAndBefore", store.JobListParams{Role: "developer", Before: at(4)}, []string{"dev finished", "full team"}},
				{"RoleAndBeforeID", store.JobListParams{Role: "developer", Before: at(4), BeforeID: ids["Build with dev"] + "z"},
					[]string{"Build with dev", "dev finished", "full team"}},
				{"RoleAndLimit", store.JobListParams{Role: "developer", Limit: 1}, []string{"Build with dev"}},
				{"RoleIsExact", store.JobListParams{Role: "Developer"}, nil},
				{"RoleWithoutTasks", store.JobListParams{Role: "devops"}, nil},
			} {
				jobs, err := s.JobList(ctx, tt.p)
				require.NoError(t, err, tt.name)
				require.Equal(t, tt.want, jobTitles(jobs), tt.name)
			}

			// A task added to a job later counts too.
			require.NoError(t, s.TaskInsert(ctx, ids["not planned"], []store.Task{{Key: "w", Role: "writer", Status: schemas.TaskPending}}))
			jobs, err := s.JobList(ctx, store.JobListParams{Role: "writer"})
			require.NoError(t, err)
			require.Equal(t, []string{"Build with dev", "not planned"}, jobTitles(jobs))
		})
	})

	t.Run("JobSetStatus", func(t *testing.T) {
		t.Parallel()

		newJob := func(t *testing.T, s store.Store) store.Job {
			t.Helper()
			job, _, err := s.JobCreate(context.Background(), store.JobCreateParams{
				Job: store.Job{Title: "t", Status: schemas.JobPlanning, Reason: "old", CreatedAt: at(0)},
			})
			require.NoError(t, err)
			return job
		}

		t.Run("MovesFromAListedStatus", func(t *testing.T) {
			s, ctx := setup(t)
			job := newJob(t, s)
			moved, err := s.JobSetStatus(ctx, store.JobSetStatusParams{
				ID: job.ID, From: []string{schemas.JobRunning, schemas.JobPlanning}, To: schemas.JobFailed, Reason: "boom",
			})
			require.NoError(t, err)
			require.True(t, moved)
			got, err := s.JobGetByID(ctx, job.ID)
			require.NoError(t, err)
			require.Equal(t, schemas.JobFailed, got.Status)
			require.Equal(t, "boom", got.Reason)
			require.True(t, got.UpdatedAt.After(job.UpdatedAt))
			require.Equal(t, job.CreatedAt, got.CreatedAt)
		})

		t.Run("StaysFromAnotherStatus", func(t *testing.T) {
			s, ctx := setup(t)
			job := newJob(t, s)
			moved, err := s.JobSetStatus(ctx, store.JobSetStatusParams{
				ID: job.ID, From: []string{schemas.JobRunning}, To: schemas.JobDone, Reason: "new",
			})
			require.NoError(t, err)
			require.False(t, moved)
			got, err := s.JobGetByID(ctx, job.ID)
			require.NoError(t, err)
			require.Equal(t, job, got)
		})

		t.Run("EmptyFromMovesAny", func(t *testing.T) {
			s, ctx := setup(t)
			job := newJob(t, s)
			moved, err := s.JobSetStatus(ctx, store.JobSetStatusParams{ID: job.ID, To: schemas.JobCancelled})
			require.NoError(t, err)
			require.True(t, moved)
			got, err := s.JobGetByID(ctx, job.ID)
			require.NoError(t, err)
			require.Equal(t, schemas.JobCancelled, got.Status)
			require.Empty(t, got.Reason)
		})

		t.Run("NotFound", func(t *testing.T) {
			s, ctx := setup(t)
			moved, err := s.JobSetStatus(ctx, store.JobSetStatusParams{ID: uuid.NewString(), To: schemas.JobDone})
			require.ErrorIs(t, err, store.ErrNotFound)
			require.False(t, moved)
		})
	})

	t.Run("TaskGetByID", func(t *testing.T) {
		t.Parallel()
		t.Run("NotFound", func(t *testing.T) {
			s, ctx := setup(t)
			_, err := s.TaskGetByID(ctx, uuid.NewString())
			require.ErrorIs(t, err, store.ErrNotFound)
		})
	})

	t.Run("TaskListByJob", func(t *testing.T) {
		t.Parallel()
		t.Run("KeepsPlanOrderAndJob", func(t *testing.T) {
			s, ctx := setup(t)
			keys := []string{"z", "a", "m", "b", "y", "c"}
			var tasks []store.Task
			for _, k := range keys {
				tasks = append(tasks, store.Task{Key: k, Role: "pm", Status: schemas.TaskPending})
			}
			job, _, err := s.JobCreate(ctx, store.JobCreateParams{Job: store.Job{Title: "t", Status: schemas.JobPlanning}, Tasks: tasks})
			require.NoError(t, err)
			_, _, err = s.JobCreate(ctx, store.JobCreateParams{
				Job:   store.Job{Title: "other", Status: schemas.JobPlanning},
				Tasks: []store.Task{{Key: "a", Role: "pm"}},
			})
			require.NoError(t, err)

			got, err := s.TaskListByJob(ctx, job.ID)
			require.NoError(t, err)
			var gotKeys []string
			for _, task := range got {
				require.Equal(t, job.ID, task.JobID)
				gotKeys = append(gotKeys, task.Key)
			}
			require.Equal(t, keys, gotKeys)

			none, err := s.TaskListByJob(ctx, uuid.NewString())
			require.NoError(t, err)
			require.Empty(t, none)
		})
	})

	t.Run("TaskUpdate", func(t *testing.T) {
		t.Parallel()

		newTask := func(t *testing.T, s store.Store) store.Task {
			t.Helper()
			ctx := context.Background()
			job, _, err := s.JobCreate(ctx, store.JobCreateParams{
				Job: store.Job{Title: "t", Status: schemas.JobRunning, CreatedAt: at(0)},
				Tasks: []store.Task{{
					Key: "a", Role: "developer", Instructions: "do", DependsOn: []string{"x"},
					Status: schemas.TaskQueued, Revision: 1, Attempts: 2, Reason: "r", Feedback: "f",
				}},
			})
			require.NoError(t, err)
			tasks, err := s.TaskListByJob(ctx, job.ID)
			require.NoError(t, err)
			return tasks[0]
		}

		t.Run("SetsGivenFields", func(t *testing.T) {
			s, ctx := setup(t)
			task := newTask(t, s)
			changed, err := s.TaskUpdate(ctx, store.TaskUpdateParams{
				ID:           task.ID,
				Status:       ptr(schemas.TaskRejected),
				SetRevision:  ptr(2),
				Reason:       ptr(""),
				Feedback:     ptr("do better"),
				IncrAttempts: true,
			})
			require.NoError(t, err)
			require.True(t, changed)
			got, err := s.TaskGetByID(ctx, task.ID)
			require.NoError(t, err)
			require.True(t, got.UpdatedAt.After(task.UpdatedAt))
			want := task
			want.Status, want.Revision, want.Reason, want.Feedback, want.Attempts = schemas.TaskRejected, 2, "", "do better", 3
			want.UpdatedAt = got.UpdatedAt
			require.Equal(t, want, got)
		})

		t.Run("LeavesNilFields", func(t *testing.T) {
			s, ctx := setup(t)
			task := newTask(t, s)
			changed, err := s.TaskUpdate(ctx, store.TaskUpdateParams{ID: task.ID, IncrAttempts: true})
			require.NoError(t, err)
			require.True(t, changed)
			got, err := s.TaskGetByID(ctx, task.ID)
			require.NoError(t, err)
			want := task
			want.Attempts = 3
			want.UpdatedAt = got.UpdatedAt
			require.Equal(t, want, got)
			require.True(t, got.UpdatedAt.After(task.UpdatedAt))

			// With no field at all, only updated_at moves.
			changed, err = s.TaskUpdate(ctx, store.TaskUpdateParams{ID: task.ID})
			require.NoError(t, err)
			require.True(t, changed)
		})

		t.Run("TouchMovesOnlyUpdatedAt", func(t *testing.T) {
			s, ctx := setup(t)
			task := newTask(t, s) // queued, revision 1, updated at(0)

			// A touch that does not match leaves the row as it is.
			for _, p := range []store.TaskUpdateParams{
				{ID: task.ID, From: []string{schemas.TaskRunning}},
				{ID: task.ID, From: []string{schemas.TaskQueued}, Revision: ptr(2)},
			} {
				changed, err := s.TaskUpdate(ctx, p)
				require.NoError(t, err)
				require.False(t, changed)
				got, err := s.TaskGetByID(ctx, task.ID)
				require.NoError(t, err)
				require.Equal(t, task, got)
			}

			before := time.Now().Truncate(time.Microsecond)
			changed, err := s.TaskUpdate(ctx, store.TaskUpdateParams{
				ID: task.ID, From: []string{schemas.TaskQueued}, Revision: ptr(1),
			})
			require.NoError(t, err)
			require.True(t, changed)
			got, err := s.TaskGetByID(ctx, task.ID)
			require.NoError(t, err)
			require.False(t, got.UpdatedAt.Before(before), "updated_at %v before %v", got.UpdatedAt, before)
			want := task
			want.UpdatedAt = got.UpdatedAt
			require.Equal(t, want, got)

			// A touched task is no longer stale.
			stale, err := s.TaskListStale(ctx, store.TaskListStaleParams{
				Statuses: []string{schemas.TaskQueued}, UpdatedBefore: before,
			})
			require.NoError(t, err)
			require.Empty(t, stale)

			_, err = s.TaskUpdate(ctx, store.TaskUpdateParams{ID: uuid.NewString(), From: []string{schemas.TaskQueued}})
			require.ErrorIs(t, err, store.ErrNotFound)
		})

		t.Run("ChecksFromAndRevision", func(t *testing.T) {
			s, ctx := setup(t)
			task := newTask(t, s) // queued, revision 1
			for _, tt := range []struct {
				name string
				p    store.TaskUpdateParams
				want bool
			}{
				{"WrongFrom", store.TaskUpdateParams{From: []string{schemas.TaskRunning}}, false},
				{"WrongRevision", store.TaskUpdateParams{Revision: ptr(0)}, false},
				{"RightFromWrongRevision", store.TaskUpdateParams{From: []string{schemas.TaskQueued}, Revision: ptr(2)}, false},
				{"WrongFromRightRevision", store.TaskUpdateParams{From: []string{schemas.TaskStaged}, Revision: ptr(1)}, false},
				{"RightFromAndRevision", store.TaskUpdateParams{From: []string{schemas.TaskPending, schemas.TaskQueued}, Revision: ptr(1)}, true},
			} {
				tt.p.ID = task.ID
				tt.p.Status = ptr(schemas.TaskRunning)
				changed, err := s.TaskUpdate(ctx, tt.p)
				require.NoError(t, err, tt.name)
				require.Equal(t, tt.want, changed, tt.name)
				got, err := s.TaskGetByID(ctx, task.ID)
				require.NoError(t, err)
				if !tt.want {
					require.Equal(t, task, got, tt.name)
				} else {
					require.Equal(t, schemas.TaskRunning, got.Status, tt.name)
				}
			}
		})

		t.Run("NotFound", func(t *testing.T) {
			s, ctx := setup(t)
			changed, err := s.TaskUpdate(ctx, store.TaskUpdateParams{ID: uuid.NewString(), Status: ptr(schemas.TaskPromoted)})
			require.ErrorIs(t, err, store.ErrNotFound)
			require.False(t, changed)
		})
	})

	t.Run("TaskStart", func(t *testing.T) {
		t.Parallel()
		newJob := func(t *testing.T, s store.Store) (store.Job, store.Task) {
			t.Helper()
			ctx := context.Background()
			job, _, err := s.JobCreate(ctx, store.JobCreateParams{
				Job: store.Job{Title: "t", Brief: "b", Status: schemas.JobRunning, BudgetTokens: 7, CreatedAt: at(0),
					Attachments: []schemas.Attachment{{Name: "a.txt", MediaType: "text/plain", Data: "eA=="}}},
				Tasks: []store.Task{{Key: "a", Role: "developer", Instructions: "do", DependsOn: []string{"x"},
					Status: schemas.TaskQueued, Revision: 1, Attempts: 2}},
			})
			require.NoError(t, err)
			tasks, err := s.TaskListByJob(ctx, job.ID)
			require.NoError(t, err)
			return job, tasks[0]
		}
		params := func(task store.Task) store.TaskStartParams {
			return store.TaskStartParams{ID: task.ID, JobID: task.JobID, Role: task.Role, Revision: task.Revision}
		}

		t.Run("RecordsItsEventOnlyWhenItStarts", func(t *testing.T) {
			s, ctx := setup(t)
			var handed []store.OutboxMessage
			var mu sync.Mutex
			if d, ok := s.(interface{ SetOutboxDirect(*store.OutboxDirect) }); ok {
				d.SetOutboxDirect(&store.OutboxDirect{Owner: "relay", Lease: time.Minute, Committed: func(msgs []store.OutboxMessage) {
					mu.Lock()
					defer mu.Unlock()
					handed = append(handed, msgs...)
				}})
			}
			withEvent := func(task store.Task, id string) store.TaskStartParams {
				p := params(task)
				p.Lessons = 5 // read in the same statement, after the event's writes
				p.Event = &store.Event{ID: id, JobID: task.JobID, TaskID: task.ID, Kind: schemas.EventTaskStarted, Role: task.Role, Revision: task.Revision, Time: at(9)}
				p.EventMessage = store.OutboxMessage{Subject: "troupe.events." + task.JobID + ".task_started", MsgID: "event." + id, Payload: []byte(`{"kind":"task_started"}`)}
				return p
			}
			_, task := newJob(t, s)
			require.NoError(t, s.LessonInsert(ctx, []store.Lesson{{Text: "mind the limits", Scope: "developer"}}))
			st, started, err := s.TaskStart(ctx, withEvent(task, "started"))
			require.NoError(t, err)
			require.True(t, started)
			require.Len(t, st.Lessons, 1)
			stale := task
			stale.Revision = 0 // the task is at revision 1
			_, started, err = s.TaskStart(ctx, withEvent(stale, "stale"))
			require.NoError(t, err)
			require.False(t, started)

			events, err := s.EventListByJob(ctx, task.JobID)
			require.NoError(t, err)
			require.Len(t, events, 1, "the start's event, not the stale message's")
			require.Equal(t, "started", events[0].ID)
			require.Equal(t, schemas.EventTaskStarted, events[0].Kind)
			require.Equal(t, 1, events[0].Revision)
			require.True(t, events[0].Time.Equal(at(9)))
			unsent, err := s.OutboxListUnsent(ctx, 10)
			require.NoError(t, err)
			require.Len(t, unsent, 1)
			require.Equal(t, "event.started", unsent[0].MsgID)
			require.Equal(t, `{"kind":"task_started"}`, string(unsent[0].Payload))
			mu.Lock()
			defer mu.Unlock()
			if handed != nil {
				require.Len(t, handed, 1, "handed to the relay once committed")
				require.Equal(t, unsent[0].Seq, handed[0].Seq)
			}
		})

		t.Run("StartsAndReturnsTheTaskWithItsJob", func(t *testing.T) {
			s, ctx := setup(t)
			job, task := newJob(t, s)
			st, started, err := s.TaskStart(ctx, params(task))
			require.NoError(t, err)
			require.True(t, started)
			got := st.Task
			require.Equal(t, job, st.Job)
			require.Empty(t, st.Lessons, "none asked for")
			stored, err := s.TaskGetByID(ctx, task.ID)
			require.NoError(t, err)
			require.Equal(t, stored, got)
			require.True(t, got.UpdatedAt.After(task.UpdatedAt), "updated_at did not move")
			want := task
			want.Status, want.Attempts, want.UpdatedAt = schemas.TaskRunning, 3, got.UpdatedAt
			require.Equal(t, want, got)

			// A running task starts again: a redelivery after a crash.
			st, started, err = s.TaskStart(ctx, params(task))
			require.NoError(t, err)
			require.True(t, started)
			require.Equal(t, 4, st.Task.Attempts)
		})

		t.Run("ReadsTheRolesLessonsWithTheTask", func(t *testing.T) {
			s, ctx := setup(t)
			_, task := newJob(t, s) // a developer's
			var lessons []store.Lesson
			for i, scope := range []string{"developer", "all", "tester", "developer", "all", "developer"} {
				lessons = append(lessons, store.Lesson{ID: fmt.Sprintf("l%d", i), Text: fmt.Sprintf("lesson %d: \"quoted\", ü, \\n", i),
					Scope: scope, ReviewID: "r" + scope, JobID: task.JobID, CreatedAt: at(i)})
			}
			lessons[3].CreatedAt = lessons[4].CreatedAt // ties go by id, newest first
			require.NoError(t, s.LessonInsert(ctx, lessons))
			want, err := s.LessonList(ctx, store.LessonListParams{Scope: "developer", IncludeGlobal: true, Limit: 4})
			require.NoError(t, err)
			require.Equal(t, []string{"l5", "l4", "l3", "l1"}, lessonIDs(want))

			p := params(task)
			p.Lessons = 4
			st, started, err := s.TaskStart(ctx, p)
			require.NoError(t, err)
			require.True(t, started)
			require.Equal(t, want, st.Lessons, "the lessons LessonList gives")

			// The limit falls between two lessons of the same time.
			for _, limit := range []int{1, 2, 3} {
				want, err := s.LessonList(ctx, store.LessonListParams{Scope: "developer", IncludeGlobal: true, Limit: limit})
				require.NoError(t, err)
				_, task := newJob(t, s)
				p := params(task)
				p.Lessons = limit
				st, started, err := s.TaskStart(ctx, p)
				require.NoError(t, err)
				require.True(t, started)
				require.Equal(t, lessonIDs(want), lessonIDs(st.Lessons), "limit %d", limit)
			}
		})

		t.Run("InsideATransactionAnswersAtOnce", func(t *testing.T) {
			s, ctx := setup(t)
			job, task := newJob(t, s)
			err := s.InTx(ctx, func(q store.Querier) error {
				p := params(task)
				p.Lessons = 10
				st, started, err := q.TaskStart(ctx, p)
				require.NoError(t, err)
				require.True(t, started, "started inside a transaction but said not")
				require.Equal(t, job.ID, st.Job.ID)
				require.Equal(t, 3, st.Task.Attempts)
				require.Empty(t, st.Lessons)
				_, started, err = q.TaskStart(ctx, store.TaskStartParams{ID: task.ID, JobID: task.JobID, Role: task.Role, Revision: 0})
				require.NoError(t, err)
				require.False(t, started, "a stale revision started")
				return nil
			})
			require.NoError(t, err)
			stored, err := s.TaskGetByID(ctx, task.ID)
			require.NoError(t, err)
			require.Equal(t, 3, stored.Attempts)
		})

		t.Run("StartsNothingElse", func(t *testing.T) {
			s, ctx := setup(t)
			_, task := newJob(t, s)
			_, other := newJob(t, s)
			wrong := map[string]store.TaskStartParams{}
			p := params(task)
			p.Revision = 2
			wrong["another revision"] = p
			p = params(task)
			p.JobID = other.JobID
			wrong["another job"] = p
			p = params(task)
			p.Role = "tester"
			wrong["another role"] = p
			p = params(task)
			p.ID = uuid.NewString()
			wrong["no such task"] = p
			for name, p := range wrong {
				p.Lessons = 10
				st, started, err := s.TaskStart(ctx, p)
				require.NoError(t, err, name)
				require.False(t, started, name)
				require.Zero(t, st, name)
			}

			// Another task's output of the same revision is no obstacle.
			_, fresh := newJob(t, s)
			_, _, err := s.OutputStage(ctx, store.Output{TaskID: other.ID, JobID: other.JobID, Role: other.Role, Revision: other.Revision, Content: "c"})
			require.NoError(t, err)
			_, started, err := s.TaskStart(ctx, params(fresh))
			require.NoError(t, err)
			require.True(t, started, "another task's output of the revision stopped the start")

			// Staged already: its output of this revision exists.
			_, _, err = s.OutputStage(ctx, store.Output{TaskID: task.ID, JobID: task.JobID, Role: task.Role, Revision: task.Revision, Content: "c"})
			require.NoError(t, err)
			_, started, err = s.TaskStart(ctx, params(task))
			require.NoError(t, err)
			require.False(t, started, "a task with an output of its revision")

			// Not queued or running.
			_, other2 := newJob(t, s)
			_, err = s.TaskUpdate(ctx, store.TaskUpdateParams{ID: other2.ID, Status: ptr(schemas.TaskCancelled)})
			require.NoError(t, err)
			_, started, err = s.TaskStart(ctx, params(other2))
			require.NoError(t, err)
			require.False(t, started, "a cancelled task")

			for _, id := range []string{task.ID, other.ID, other2.ID} {
				got, err := s.TaskGetByID(ctx, id)
				require.NoError(t, err)
				require.Equal(t, 2, got.Attempts, "task %s was changed", id)
			}
		})
	})

	t.Run("TaskListStale", func(t *testing.T) {
		t.Parallel()

		taskKeys := func(tasks []store.Task) []string {
			var out []string
			for _, task := range tasks {
				out = append(out, task.Key)
			}
			return out
		}

		t.Run("FiltersAndOrdersLeastRecentlyUpdatedFirst", func(t *testing.T) {
			s, ctx := setup(t)
			// Keys are given ids in the reverse of their order, so ties
			// are broken by id and not by chance.
			mk := func(key, id, status string, updated int) store.Task {
				return store.Task{ID: id, Key: key, Role: "developer", Status: status, CreatedAt: at(0), UpdatedAt: at(updated)}
			}
			_, _, err := s.JobCreate(ctx, store.JobCreateParams{
				Job: store.Job{Title: "one", Status: schemas.JobRunning, CreatedAt: at(0)},
				Tasks: []store.Task{
					mk("a", "id-7", schemas.TaskQueued, 5),
					mk("b", "id-6", schemas.TaskRunning, 1),
					mk("c", "id-5", schemas.TaskRunning, 3),
					mk("d", "id-4", schemas.TaskStaged, 2),
				},
			})
			require.NoError(t, err)
			_, _, err = s.JobCreate(ctx, store.JobCreateParams{
				Job: store.Job{Title: "two", Status: schemas.JobRunning, CreatedAt: at(0)},
				Tasks: []store.Task{
					mk("e", "id-3", schemas.TaskRunning, 10),
					mk("f", "id-2", schemas.TaskPromoted, 0),
					mk("g", "id-1", schemas.TaskQueued, 3),
				},
			})
			require.NoError(t, err)

			active := []string{schemas.TaskQueued, schemas.TaskRunning}
			for _, tt := range []struct {
				name string
				p    store.TaskListStaleParams
				want []string
			}{
				{"Active", store.TaskListStaleParams{Statuses: active, UpdatedBefore: at(10)}, []string{"b", "g", "c", "a"}},
				{"BeforeIsStrict", store.TaskListStaleParams{Statuses: active, UpdatedBefore: at(3)}, []string{"b"}},
				{"Everything", store.TaskListStaleParams{Statuses: active, UpdatedBefore: at(11)}, []string{"b", "g", "c", "a", "e"}},
				{"Limit", store.TaskListStaleParams{Statuses: active, UpdatedBefore: at(10), Limit: 2}, []string{"b", "g"}},
				{"OneStatus", store.TaskListStaleParams{Statuses: []string{schemas.TaskStaged}, UpdatedBefore: at(10)}, []string{"d"}},
				{"OtherStatuses", store.TaskListStaleParams{Statuses: []string{schemas.TaskPromoted, schemas.TaskStaged}, UpdatedBefore: at(10)}, []string{"f", "d"}},
				{"NoneOld", store.TaskListStaleParams{Statuses: active, UpdatedBefore: at(1)}, nil},
				{"NoStatuses", store.TaskListStaleParams{UpdatedBefore: at(10)}, nil},
				{"UnknownStatus", store.TaskListStaleParams{Statuses: []string{"nope"}, UpdatedBefore: at(10)}, nil},
			} {
				tasks, err := s.TaskListStale(ctx, tt.p)
				require.NoError(t, err, tt.name)
				require.Equal(t, tt.want, taskKeys(tasks), tt.name)
			}

			// Rows come back whole.
			tasks, err := s.TaskListStale(ctx, store.TaskListStaleParams{Statuses: []string{schemas.TaskStaged}, UpdatedBefore: at(10)})
			require.NoError(t, err)
			require.Len(t, tasks, 1)
			got, err := s.TaskGetByID(ctx, tasks[0].ID)
			require.NoError(t, err)
			require.Equal(t, got, tasks[0])
		})

		t.Run("LimitDefaultsTo100", func(t *testing.T) {
			s, ctx := setup(t)
			var tasks []store.Task
			for i := range 102 {
				tasks = append(tasks, store.Task{
					Key: fmt.Sprintf("k%03d", i), Role: "pm", Status: schemas.TaskRunning, UpdatedAt: at(i),
				})
			}
			_, _, err := s.JobCreate(ctx, store.JobCreateParams{Job: store.Job{Title: "t", Status: schemas.JobRunning}, Tasks: tasks})
			require.NoError(t, err)
			stale, err := s.TaskListStale(ctx, store.TaskListStaleParams{
				Statuses: []string{schemas.TaskRunning}, UpdatedBefore: at(1000),
			})
			require.NoError(t, err)
			require.Len(t, stale, 100)
			require.Equal(t, "k000", stale[0].Key)
			require.Equal(t, "k099", stale[99].Key)
		})
	})

	t.Run("TaskCount", func(t *testing.T) {
		t.Parallel()
		t.Run("ByRoleAndStatus", func(t *testing.T) {
			s, ctx := setup(t)
			mk := func(key, role, status string) store.Task {
				return store.Task{Key: key, Role: role, Status: status}
			}
			for _, tasks := range [][]store.Task{
				{
					mk("a", "developer", schemas.TaskRunning),
					mk("b", "developer", schemas.TaskQueued),
					mk("c", "developer", schemas.TaskPromoted),
					mk("d", "pm", schemas.TaskRunning),
				},
				{
					mk("a", "developer", schemas.TaskRunning),
					mk("b", "architect", schemas.TaskQueued),
				},
			} {
				_, _, err := s.JobCreate(ctx, store.JobCreateParams{Job: store.Job{Title: "t", Status: schemas.JobRunning}, Tasks: tasks})
				require.NoError(t, err)
			}
			active := []string{schemas.TaskQueued, schemas.TaskRunning}
			for _, tt := range []struct {
				name     string
				role     string
				statuses []string
				want     int
			}{
				{"RoleActive", "developer", active, 3},
				{"RoleOneStatus", "developer", []string{schemas.TaskRunning}, 2},
				{"RolePromoted", "developer", []string{schemas.TaskPromoted}, 1},
				{"OtherRole", "pm", active, 1},
				{"AnyRoleActive", "", active, 5},
				{"AnyRoleRunning", "", []string{schemas.TaskRunning}, 3},
				{"AnyRoleAll", "", []string{schemas.TaskQueued, schemas.TaskRunning, schemas.TaskPromoted}, 6},
				{"UnknownRole", "nobody", active, 0},
				{"UnknownStatus", "developer", []string{"nope"}, 0},
				{"NoStatuses", "developer", nil, 0},
			} {
				n, err := s.TaskCount(ctx, tt.role, tt.statuses)
				require.NoError(t, err, tt.name)
				require.Equal(t, tt.want, n, tt.name)
			}

			// A count follows a status change, also inside a transaction.
			require.NoError(t, s.InTx(ctx, func(q store.Querier) error {
				running, err := q.TaskListStale(ctx, store.TaskListStaleParams{
					Statuses: []string{schemas.TaskRunning}, UpdatedBefore: time.Now().Add(time.Hour),
				})
				require.NoError(t, err)
				for _, task := range running {
					if task.Role != "pm" {
						continue
					}
					changed, err := q.TaskUpdate(ctx, store.TaskUpdateParams{ID: task.ID, Status: ptr(schemas.TaskPromoted)})
					require.NoError(t, err)
					require.True(t, changed)
				}
				n, err := q.TaskCount(ctx, "pm", active)
				require.NoError(t, err)
				require.Equal(t, 0, n)
				return nil
			}))
			n, err := s.TaskCount(ctx, "", active)
			require.NoError(t, err)
			require.Equal(t, 4, n)
		})
	})

	t.Run("OutputStage", func(t *testing.T) {
		t.Parallel()

		t.Run("InsertsAndRoundTrips", func(t *testing.T) {
			s, ctx := setup(t)
			task := newTask(t, s)
			in := store.Output{
				ID:               uuid.NewString(),
				TaskID:           task.ID,
				JobID:            task.JobID,
				Role:             task.Role,
				Revision:         1,
				Status:           schemas.OutputAwaitingReview,
				Content:          "the content",
				Files:            []schemas.File{{Path: "main.go", Content: "package main"}, {Path: "README.md"}},
				Model:            "m-1",
				PromptTokens:     10,
				CompletionTokens: 20,
				LatencyMS:        30,
				Prompt:           "the prompt",
				Checks:           []schemas.Check{{Name: "builds", Passed: true}, {Name: "tests", Detail: "1 failed"}},
				CreatedAt:        at(5),
			}
			out, created, err := s.OutputStage(ctx, in)
			require.NoError(t, err)
			require.True(t, created)
			require.Equal(t, in, out)

			got, err := s.OutputGetByID(ctx, in.ID)
			require.NoError(t, err)
			require.Equal(t, in, got)
			got, err = s.OutputGetByTaskRevision(ctx, task.ID, 1)
			require.NoError(t, err)
			require.Equal(t, in, got)
		})

		t.Run("FillsIDStatusAndTime", func(t *testing.T) {
			s, ctx := setup(t)
			task := newTask(t, s)
			out, created, err := s.OutputStage(ctx, store.Output{TaskID: task.ID, JobID: task.JobID, Role: task.Role, Revision: 1})
			require.NoError(t, err)
			require.True(t, created)
			_, err = uuid.Parse(out.ID)
			require.NoError(t, err)
			require.Equal(t, schemas.OutputStaged, out.Status)
			require.WithinDuration(t, time.Now(), out.CreatedAt, time.Minute)
			got, err := s.OutputGetByID(ctx, out.ID)
			require.NoError(t, err)
			require.Equal(t, out, got)
		})

		t.Run("DuplicateReturnsExisting", func(t *testing.T) {
			s, ctx := setup(t)
			task := newTask(t, s)
			first, created, err := s.OutputStage(ctx, store.Output{TaskID: task.ID, JobID: task.JobID, Role: task.Role, Revision: 1, Content: "first"})
			require.NoError(t, err)
			require.True(t, created)
			second, created, err := s.OutputStage(ctx, store.Output{TaskID: task.ID, JobID: task.JobID, Role: task.Role, Revision: 1, Content: "second"})
			require.NoError(t, err)
			require.False(t, created)
			require.Equal(t, first, second)

			// Another revision is another output.
			third, created, err := s.OutputStage(ctx, store.Output{TaskID: task.ID, JobID: task.JobID, Role: task.Role, Revision: 2, Content: "third"})
			require.NoError(t, err)
			require.True(t, created)
			require.NotEqual(t, first.ID, third.ID)
		})

		t.Run("DuplicateRace", func(t *testing.T) {
			s, ctx := setup(t)
			task := newTask(t, s)
			const n = 8
			var (
				wg      sync.WaitGroup
				start   = make(chan struct{})
				outs    = make([]store.Output, n)
				created = make([]bool, n)
				errs    = make([]error, n)
			)
			for i := range n {
				wg.Go(func() {
					<-start
					outs[i], created[i], errs[i] = s.OutputStage(ctx, store.Output{
						TaskID: task.ID, JobID: task.JobID, Role: task.Role, Revision: 1, Content: fmt.Sprint(i),
					})
				})
			}
			close(start)
			wg.Wait()
			winners := 0
			for i := range n {
				require.NoError(t, errs[i])
				require.Equal(t, outs[0], outs[i])
				if created[i] {
					winners++
				}
			}
			require.Equal(t, 1, winners)
		})

		t.Run("MissingTask", func(t *testing.T) {
			s, ctx := setup(t)
			_, _, err := s.OutputStage(ctx, store.Output{TaskID: uuid.NewString(), JobID: uuid.NewString(), Role: "pm", Revision: 1})
			require.ErrorIs(t, err, store.ErrNotFound)
		})

		t.Run("NotFound", func(t *testing.T) {
			s, ctx := setup(t)
			_, err := s.OutputGetByID(ctx, uuid.NewString())
			require.ErrorIs(t, err, store.ErrNotFound)
			task := newTask(t, s)
			_, err = s.OutputGetByTaskRevision(ctx, task.ID, 1)
			require.ErrorIs(t, err, store.ErrNotFound)
		})
	})

	t.Run("OutputListByJob", func(t *testing.T) {
		t.Parallel()
		t.Run("OldestFirst", func(t *testing.T) {
			s, ctx := setup(t)
			task := newTask(t, s)
			other := newTask(t, s)
			// Inserted newest first, listed oldest first.
			for rev := 3; rev >= 1; rev-- {
				_, _, err := s.OutputStage(ctx, store.Output{TaskID: task.ID, JobID: task.JobID, Role: task.Role, Revision: rev, CreatedAt: at(rev)})
				require.NoError(t, err)
			}
			_, _, err := s.OutputStage(ctx, store.Output{TaskID: other.ID, JobID: other.JobID, Role: other.Role, Revision: 1})
			require.NoError(t, err)
			outs, err := s.OutputListByJob(ctx, task.JobID)
			require.NoError(t, err)
			require.Equal(t, []int{1, 2, 3}, revisions(outs))
		})
	})

	t.Run("OutputList", func(t *testing.T) {
		t.Parallel()

		t.Run("Filters", func(t *testing.T) {
			s, ctx := setup(t)
			dev := newTaskWithRole(t, s, "developer")
			tester := newTaskWithRole(t, s, "tester")
			stage := func(task store.Task, rev int, status string, n int) {
				_, _, err := s.OutputStage(ctx, store.Output{
					TaskID: task.ID, JobID: task.JobID, Role: task.Role, Revision: rev, Status: status, CreatedAt: at(n),
					Content: fmt.Sprintf("%s-%d", task.Role, rev),
				})
				require.NoError(t, err)
			}
			stage(dev, 1, schemas.OutputRejected, 1)
			stage(tester, 1, schemas.OutputAwaitingReview, 2)
			stage(dev, 2, schemas.OutputAwaitingReview, 3)
			stage(tester, 2, schemas.OutputPromoted, 4)

			for _, tt := range []struct {
				name string
				p    store.OutputListParams
				want []string
			}{
				{"All", store.OutputListParams{}, []string{"developer-1", "tester-1", "developer-2", "tester-2"}},
				{"Status", store.OutputListParams{Status: schemas.OutputAwaitingReview}, []string{"tester-1", "developer-2"}},
				{"Role", store.OutputListParams{Role: "tester"}, []string{"tester-1", "tester-2"}},
				{"StatusAndRole", store.OutputListParams{Status: schemas.OutputAwaitingReview, Role: "developer"}, []string{"developer-2"}},
				{"Job", store.OutputListParams{JobID: dev.JobID}, []string{"developer-1", "developer-2"}},
				{"AfterWithoutID", store.OutputListParams{After: at(2)}, []string{"developer-2", "tester-2"}},
				{"Limit", store.OutputListParams{Limit: 1}, []string{"developer-1"}},
			} {
				outs, err := s.OutputList(ctx, tt.p)
				require.NoError(t, err, tt.name)
				require.Equal(t, tt.want, contents(outs), tt.name)
			}
		})

		t.Run("PagesWithoutGapsOrDuplicates", func(t *testing.T) {
			s, ctx := setup(t)
			var want []store.Output
			for i := range 5 {
				task := newTask(t, s)
				for rev := 1; rev <= 3; rev++ {
					out, _, err := s.OutputStage(ctx, store.Output{
						TaskID: task.ID, JobID: task.JobID, Role: task.Role, Revision: rev, CreatedAt: at(i), // ties
					})
					require.NoError(t, err)
					want = append(want, out)
				}
			}
			sort.Slice(want, func(i, j int) bool {
				if !want[i].CreatedAt.Equal(want[j].CreatedAt) {
					return want[i].CreatedAt.Before(want[j].CreatedAt)
				}
				return want[i].ID < want[j].ID
			})
			var got []store.Output
			p := store.OutputListParams{Status: schemas.OutputStaged, Limit: 4}
			for pages := 0; ; pages++ {
				require.Less(t, pages, 10, "too many pages")
				page, err := s.OutputList(ctx, p)
				require.NoError(t, err)
				if len(page) == 0 {
					break
				}
				got = append(got, page...)
				last := page[len(page)-1]
				p.After, p.AfterID = last.CreatedAt, last.ID
			}
			require.Equal(t, want, got)
		})
	})

	t.Run("OutputSetStatus", func(t *testing.T) {
		t.Parallel()
		t.Run("MovesOnlyFromListed", func(t *testing.T) {
			s, ctx := setup(t)
			task := newTask(t, s)
			out, _, err := s.OutputStage(ctx, store.Output{TaskID: task.ID, JobID: task.JobID, Role: task.Role, Revision: 1})
			require.NoError(t, err)

			moved, err := s.OutputSetStatus(ctx, store.OutputSetStatusParams{ID: out.ID, From: []string{schemas.OutputAwaitingReview}, To: schemas.OutputPromoted})
			require.NoError(t, err)
			require.False(t, moved)
			got, err := s.OutputGetByID(ctx, out.ID)
			require.NoError(t, err)
			require.Equal(t, schemas.OutputStaged, got.Status)

			moved, err = s.OutputSetStatus(ctx, store.OutputSetStatusParams{ID: out.ID, From: []string{schemas.OutputStaged, schemas.OutputAwaitingReview}, To: schemas.OutputPromoted})
			require.NoError(t, err)
			require.True(t, moved)
			got, err = s.OutputGetByID(ctx, out.ID)
			require.NoError(t, err)
			require.Equal(t, schemas.OutputPromoted, got.Status)

			moved, err = s.OutputSetStatus(ctx, store.OutputSetStatusParams{ID: out.ID, To: schemas.OutputRejected})
			require.NoError(t, err)
			require.True(t, moved)
		})

		t.Run("NotFound", func(t *testing.T) {
			s, ctx := setup(t)
			moved, err := s.OutputSetStatus(ctx, store.OutputSetStatusParams{ID: uuid.NewString(), From: []string{schemas.OutputStaged}, To: schemas.OutputPromoted})
			require.ErrorIs(t, err, store.ErrNotFound)
			require.False(t, moved)
		})
	})

	t.Run("Review", func(t *testing.T) {
		t.Parallel()

		t.Run("InsertAndList", func(t *testing.T) {
			s, ctx := setup(t)
			task := newTask(t, s)
			out1, _, err := s.OutputStage(ctx, store.Output{TaskID: task.ID, JobID: task.JobID, Role: task.Role, Revision: 1})
			require.NoError(t, err)
			out2, _, err := s.OutputStage(ctx, store.Output{TaskID: task.ID, JobID: task.JobID, Role: task.Role, Revision: 2})
			require.NoError(t, err)

			r1 := store.Review{
				ID: uuid.NewString(), OutputID: out1.ID, TaskID: task.ID, JobID: task.JobID,
				Decision: "reject", Reviewer: "ann", Feedback: "more tests",
				Checks:    []schemas.Check{{Name: "lint", Passed: false, Detail: "2 issues"}},
				Lessons:   []schemas.Lesson{{Text: "write tests first", Scope: "developer", CreatedAt: at(1)}},
				CreatedAt: at(3),
			}
			r2 := store.Review{ID: uuid.NewString(), OutputID: out1.ID, TaskID: task.ID, JobID: task.JobID, Decision: "reject", CreatedAt: at(1)}
			r3 := store.Review{ID: uuid.NewString(), OutputID: out2.ID, TaskID: task.ID, JobID: task.JobID, Decision: "promote", CreatedAt: at(2)}
			for _, r := range []store.Review{r1, r2, r3} {
				require.NoError(t, s.ReviewInsert(ctx, r))
			}
			other := newTask(t, s)
			otherOut, _, err := s.OutputStage(ctx, store.Output{TaskID: other.ID, JobID: other.JobID, Role: other.Role, Revision: 1})
			require.NoError(t, err)
			require.NoError(t, s.ReviewInsert(ctx, store.Review{OutputID: otherOut.ID, TaskID: other.ID, JobID: other.JobID, Decision: "promote"}))

			byOutput, err := s.ReviewListByOutput(ctx, out1.ID)
			require.NoError(t, err)
			require.Equal(t, []store.Review{r2, r1}, byOutput)
			byJob, err := s.ReviewListByJob(ctx, task.JobID)
			require.NoError(t, err)
			require.Equal(t, []store.Review{r2, r3, r1}, byJob)

			byOther, err := s.ReviewListByJob(ctx, other.JobID)
			require.NoError(t, err)
			require.Len(t, byOther, 1)
			_, err = uuid.Parse(byOther[0].ID)
			require.NoError(t, err)
			require.WithinDuration(t, time.Now(), byOther[0].CreatedAt, time.Minute)
		})

		t.Run("MissingOutput", func(t *testing.T) {
			s, ctx := setup(t)
			err := s.ReviewInsert(ctx, store.Review{OutputID: uuid.NewString(), Decision: "promote"})
			require.ErrorIs(t, err, store.ErrNotFound)
		})
	})

	t.Run("Artifact", func(t *testing.T) {
		t.Parallel()

		t.Run("VersionsCountUpPerPath", func(t *testing.T) {
			s, ctx := setup(t)
			for v := 1; v <= 3; v++ {
				a, err := s.ArtifactInsert(ctx, store.Artifact{
					Path: "docs/a.md", Content: fmt.Sprintf("v%d", v), Size: 2, JobID: "j", TaskID: "t", OutputID: "o",
					Role: "writer", Version: 99, CreatedAt: at(v),
				})
				require.NoError(t, err)
				require.Equal(t, v, a.Version)
				_, err = uuid.Parse(a.ID)
				require.NoError(t, err)
			}
			b, err := s.ArtifactInsert(ctx, store.Artifact{Path: "docs/b.md", Content: "b"})
			require.NoError(t, err)
			require.Equal(t, 1, b.Version)

			newest, err := s.ArtifactGet(ctx, "docs/a.md", 0)
			require.NoError(t, err)
			require.Equal(t, 3, newest.Version)
			require.Equal(t, "v3", newest.Content)
			require.Equal(t, store.Artifact{
				ID: newest.ID, Path: "docs/a.md", Version: 3, JobID: "j", TaskID: "t", OutputID: "o",
				Role: "writer", Content: "v3", Size: 2, CreatedAt: at(3),
			}, newest)

			v2, err := s.ArtifactGet(ctx, "docs/a.md", 2)
			require.NoError(t, err)
			require.Equal(t, "v2", v2.Content)

			_, err = s.ArtifactGet(ctx, "docs/a.md", 4)
			require.ErrorIs(t, err, store.ErrNotFound)
			_, err = s.ArtifactGet(ctx, "docs/none.md", 0)
			require.ErrorIs(t, err, store.ErrNotFound)
		})

		t.Run("ConcurrentInsertsGetDistinctVersions", func(t *testing.T) {
			s, ctx := setup(t)
			const n = 10
			var (
				wg       sync.WaitGroup
				start    = make(chan struct{})
				versions = make([]int, n)
				errs     = make([]error, n)
			)
			for i := range n {
				wg.Go(func() {
					<-start
					a, err := s.ArtifactInsert(ctx, store.Artifact{Path: "race.txt", Content: fmt.Sprint(i)})
					versions[i], errs[i] = a.Version, err
				})
			}
			close(start)
			wg.Wait()
			for _, err := range errs {
				require.NoError(t, err)
			}
			slices.Sort(versions)
			require.Equal(t, []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, versions)
		})

		t.Run("AddCountsUpLikeInsert", func(t *testing.T) {
			s, ctx := setup(t)
			require.NoError(t, s.ArtifactAdd(ctx, store.Artifact{Path: "x.md", Content: "1", Size: 1, Role: "pm"}))
			require.NoError(t, s.InTx(ctx, func(q store.Querier) error {
				if err := q.ArtifactAdd(ctx, store.Artifact{Path: "x.md", Content: "2", Size: 1}); err != nil {
					return err
				}
				a, err := q.ArtifactInsert(ctx, store.Artifact{Path: "x.md", Content: "3", Size: 1})
				if err != nil {
					return err
				}
				require.Equal(t, 3, a.Version, "the insert sees the add before it")
				return nil
			}))
			for v := 1; v <= 3; v++ {
				a, err := s.ArtifactGet(ctx, "x.md", v)
				require.NoError(t, err)
				require.Equal(t, fmt.Sprint(v), a.Content)
			}
			first, err := s.ArtifactGet(ctx, "x.md", 1)
			require.NoError(t, err)
			require.Equal(t, "pm", first.Role)
			require.Equal(t, 1, first.Size)

			// Concurrent adds get distinct versions too.
			var wg sync.WaitGroup
			errs := make([]error, 10)
			for i := range errs {
				wg.Go(func() { errs[i] = s.ArtifactAdd(ctx, store.Artifact{Path: "y.md", Content: fmt.Sprint(i)}) })
			}
			wg.Wait()
			for _, err := range errs {
				require.NoError(t, err)
			}
			newest, err := s.ArtifactGet(ctx, "y.md", 0)
			require.NoError(t, err)
			require.Equal(t, 10, newest.Version)
		})

		t.Run("ListShowsNewestPerPath", func(t *testing.T) {
			s, ctx := setup(t)
			insert := func(path, job string) {
				_, err := s.ArtifactInsert(ctx, store.Artifact{Path: path, JobID: job, Content: "content of " + path, Size: 7})
				require.NoError(t, err)
			}
			insert("docs/a.md", "j1")
			insert("docs/a.md", "j1")
			insert("docs/a.md", "j2")
			insert("docs/b.md", "j1")
			insert("Docs/upper.md", "j2")
			insert("docs_x/c.md", "j2")
			insert("src/main.go", "j2")
			insert("src/main.go", "j2")

			for _, tt := range []struct {
				name string
				p    store.ArtifactListParams
				want []string // path@version
			}{
				{"All", store.ArtifactListParams{}, []string{"Docs/upper.md@1", "docs/a.md@3", "docs/b.md@1", "docs_x/c.md@1", "src/main.go@2"}},
				{"PrefixIsCaseSensitiveAndLiteral", store.ArtifactListParams{Prefix: "docs/"}, []string{"docs/a.md@3", "docs/b.md@1"}},
				{"PrefixUnderscore", store.ArtifactListParams{Prefix: "docs_"}, []string{"docs_x/c.md@1"}},
				{"Job", store.ArtifactListParams{JobID: "j1"}, []string{"docs/a.md@2", "docs/b.md@1"}},
				{"JobAndPrefix", store.ArtifactListParams{JobID: "j2", Prefix: "docs"}, []string{"docs/a.md@3", "docs_x/c.md@1"}},
				{"FirstPage", store.ArtifactListParams{Limit: 2}, []string{"Docs/upper.md@1", "docs/a.md@3"}},
				{"SecondPage", store.ArtifactListParams{Limit: 2, AfterPath: "docs/a.md"}, []string{"docs/b.md@1", "docs_x/c.md@1"}},
				{"LastPage", store.ArtifactListParams{Limit: 2, AfterPath: "docs_x/c.md"}, []string{"src/main.go@2"}},
				{"NoMatch", store.ArtifactListParams{Prefix: "nothing/"}, nil},
			} {
				list, err := s.ArtifactList(ctx, tt.p)
				require.NoError(t, err, tt.name)
				var got []string
				for _, a := range list {
					require.Empty(t, a.Content, "list has no content")
					require.Equal(t, 7, a.Size)
					got = append(got, fmt.Sprintf("%s@%d", a.Path, a.Version))
				}
				require.Equal(t, tt.want, got, tt.name)
			}
		})

		t.Run("ListLimitDefaultsTo100", func(t *testing.T) {
			s, ctx := setup(t)
			for i := range 101 {
				_, err := s.ArtifactInsert(ctx, store.Artifact{Path: fmt.Sprintf("f/%03d", i)})
				require.NoError(t, err)
			}
			list, err := s.ArtifactList(ctx, store.ArtifactListParams{})
			require.NoError(t, err)
			require.Len(t, list, 100)
			require.Equal(t, "f/099", list[99].Path)
		})

		t.Run("ListByTask", func(t *testing.T) {
			s, ctx := setup(t)
			for _, a := range []store.Artifact{
				{Path: "x.md", TaskID: "t1", Content: "x1"},
				{Path: "y.md", TaskID: "t1", Content: "y1"},
				{Path: "x.md", TaskID: "t2", Content: "x2"},
				{Path: "y.md", TaskID: "t1", Content: "y2"},
			} {
				_, err := s.ArtifactInsert(ctx, a)
				require.NoError(t, err)
			}
			list, err := s.ArtifactListByTask(ctx, "t1")
			require.NoError(t, err)
			var got []string
			for _, a := range list {
				got = append(got, fmt.Sprintf("%s@%d=%s", a.Path, a.Version, a.Content))
			}
			require.Equal(t, []string{"x.md@1=x1", "y.md@2=y2"}, got)

			none, err := s.ArtifactListByTask(ctx, "t3")
			require.NoError(t, err)
			require.Empty(t, none)
		})
	})

	t.Run("Lesson", func(t *testing.T) {
		t.Parallel()

		t.Run("InsertAndFilter", func(t *testing.T) {
			s, ctx := setup(t)
			lessons := []store.Lesson{
				{ID: uuid.NewString(), Text: "Write tests FIRST", Scope: "developer", ReviewID: "r1", JobID: "j1", CreatedAt: at(1)},
				{ID: uuid.NewString(), Text: "keep it short", Scope: "all", CreatedAt: at(2)},
				{ID: uuid.NewString(), Text: "check the tests pass", Scope: "tester", CreatedAt: at(3)},
				{ID: uuid.NewString(), Text: "name things well", Scope: "developer", CreatedAt: at(4)},
			}
			require.NoError(t, s.LessonInsert(ctx, lessons))
			require.NoError(t, s.LessonInsert(ctx, nil))

			all, err := s.LessonList(ctx, store.LessonListParams{})
			require.NoError(t, err)
			require.Equal(t, []store.Lesson{lessons[3], lessons[2], lessons[1], lessons[0]}, all)

			for _, tt := range []struct {
				name string
				p    store.LessonListParams
				want []string
			}{
				{"Scope", store.LessonListParams{Scope: "developer"}, []string{"name things well", "Write tests FIRST"}},
				{"ScopeWithGlobal", store.LessonListParams{Scope: "developer", IncludeGlobal: true},
					[]string{"name things well", "keep it short", "Write tests FIRST"}},
				{"GlobalScope", store.LessonListParams{Scope: "all"}, []string{"keep it short"}},
				{"QueryIgnoresCase", store.LessonListParams{Query: "tests"}, []string{"check the tests pass", "Write tests FIRST"}},
				{"QueryAndScope", store.LessonListParams{Query: "TESTS", Scope: "tester", IncludeGlobal: true}, []string{"check the tests pass"}},
				{"Before", store.LessonListParams{Before: at(3)}, []string{"keep it short", "Write tests FIRST"}},
				{"Limit", store.LessonListParams{Limit: 1}, []string{"name things well"}},
			} {
				got, err := s.LessonList(ctx, tt.p)
				require.NoError(t, err, tt.name)
				var texts []string
				for _, l := range got {
					texts = append(texts, l.Text)
				}
				require.Equal(t, tt.want, texts, tt.name)
			}
		})

		t.Run("FillsIDAndTime", func(t *testing.T) {
			s, ctx := setup(t)
			require.NoError(t, s.LessonInsert(ctx, []store.Lesson{{Text: "a", Scope: "all"}}))
			got, err := s.LessonList(ctx, store.LessonListParams{})
			require.NoError(t, err)
			require.Len(t, got, 1)
			_, err = uuid.Parse(got[0].ID)
			require.NoError(t, err)
			require.WithinDuration(t, time.Now(), got[0].CreatedAt, time.Minute)
		})

		t.Run("PagesWithoutGapsOrDuplicates", func(t *testing.T) {
			s, ctx := setup(t)
			var want []store.Lesson
			for i := range 11 {
				want = append(want, store.Lesson{ID: uuid.NewString(), Text: fmt.Sprint(i), Scope: "all", CreatedAt: at(i / 2)})
			}
			require.NoError(t, s.LessonInsert(ctx, want))
			sort.Slice(want, func(i, j int) bool {
				if !want[i].CreatedAt.Equal(want[j].CreatedAt) {
					return want[i].CreatedAt.After(want[j].CreatedAt)
				}
				return want[i].ID > want[j].ID
			})
			var got []store.Lesson
			p := store.LessonListParams{Limit: 3}
			for pages := 0; ; pages++ {
				require.Less(t, pages, 10, "too many pages")
				page, err := s.LessonList(ctx, p)
				require.NoError(t, err)
				if len(page) == 0 {
					break
				}
				got = append(got, page...)
				last := page[len(page)-1]
				p.Before, p.BeforeID = last.CreatedAt, last.ID
			}
			require.Equal(t, want, got)
		})
	})

	t.Run("Event", func(t *testing.T) {
		t.Parallel()
		t.Run("InsertAndListByJob", func(t *testing.T) {
			s, ctx := setup(t)
			jobID, otherJob := uuid.NewString(), uuid.NewString()
			batch := []store.Event{
				{ID: uuid.NewString(), JobID: jobID, Kind: schemas.EventJobSubmitted, Time: at(5),
					Data: map[string]any{"title": "t", "tasks": float64(3), "nested": map[string]any{"ok": true}, "list": []any{"a", "b"}}},
				{ID: uuid.NewString(), JobID: jobID, TaskID: "t1", OutputID: "o1", Kind: schemas.EventTaskQueued, Role: "pm", Revision: 2, Message: "queued", Time: at(5)},
				{ID: uuid.NewString(), JobID: jobID, Kind: schemas.EventTaskStarted, Time: at(5)},
			}
			require.NoError(t, s.EventInsert(ctx, batch))
			earlier := store.Event{ID: uuid.NewString(), JobID: jobID, Kind: schemas.EventJobDone, Time: at(1)}
			require.NoError(t, s.EventInsert(ctx, []store.Event{earlier, {JobID: otherJob, Kind: schemas.EventJobDone}}))
			require.NoError(t, s.EventInsert(ctx, nil))

			got, err := s.EventListByJob(ctx, jobID)
			require.NoError(t, err)
			require.Equal(t, []store.Event{earlier, batch[0], batch[1], batch[2]}, got)

			other, err := s.EventListByJob(ctx, otherJob)
			require.NoError(t, err)
			require.Len(t, other, 1)
			_, err = uuid.Parse(other[0].ID)
			require.NoError(t, err)
			require.WithinDuration(t, time.Now(), other[0].Time, time.Minute)
			require.Nil(t, other[0].Data)
		})

		t.Run("SameInstantKeepsInsertOrder", func(t *testing.T) {
			s, ctx := setup(t)
			jobID := uuid.NewString()
			var batch []store.Event
			for i := range 20 {
				batch = append(batch, store.Event{JobID: jobID, Kind: schemas.EventTaskQueued, Message: fmt.Sprint(i), Time: at(0)})
			}
			require.NoError(t, s.EventInsert(ctx, batch))
			got, err := s.EventListByJob(ctx, jobID)
			require.NoError(t, err)
			require.Len(t, got, 20)
			for i, e := range got {
				require.Equal(t, fmt.Sprint(i), e.Message)
			}
		})

		t.Run("EmitWritesEventsWithTheirMessages", func(t *testing.T) {
			s, ctx := setup(t)
			jobID := uuid.NewString()
			events := []store.Event{
				{ID: uuid.NewString(), JobID: jobID, Kind: schemas.EventJobSubmitted, Message: "one", Time: at(1),
					Data: map[string]any{"n": float64(1)}},
				{ID: uuid.NewString(), JobID: jobID, TaskID: "t1", Kind: schemas.EventTaskQueued, Role: "pm", Message: "two", Time: at(2)},
			}
			msgs := []store.OutboxMessage{
				{Subject: "troupe.events." + jobID + ".job_submitted", MsgID: "event." + events[0].ID, Payload: []byte(`1`), CreatedAt: at(1)},
				{Subject: "troupe.events." + jobID + ".task_queued", MsgID: "event." + events[1].ID, Payload: []byte(`2`), CreatedAt: at(2)},
			}
			require.NoError(t, s.InTx(ctx, func(q store.Querier) error { return q.EventEmit(ctx, events, msgs) }))
			require.NoError(t, s.EventEmit(ctx, nil, nil))

			// Rolled back with its transaction: neither the event nor its message.
			rolledBack := errors.New("rolled back")
			err := s.InTx(ctx, func(q store.Querier) error {
				if err := q.EventEmit(ctx, []store.Event{{JobID: jobID, Kind: schemas.EventJobDone}},
					[]store.OutboxMessage{{Subject: "troupe.events." + jobID + ".job_done", MsgID: "gone", Payload: []byte(`3`)}}); err != nil {
					return err
				}
				return rolledBack
			})
			require.ErrorIs(t, err, rolledBack)

			// An event without its message is refused, and writes nothing.
			err = s.EventEmit(ctx, []store.Event{{JobID: jobID, Kind: schemas.EventJobDone}}, nil)
			require.ErrorContains(t, err, "1 events but 0 messages")

			got, err := s.EventListByJob(ctx, jobID)
			require.NoError(t, err)
			require.Equal(t, events, got)
			unsent, err := s.OutboxListUnsent(ctx, 100)
			require.NoError(t, err)
			require.Len(t, unsent, 2)
			for i, m := range unsent {
				require.Equal(t, msgs[i].Subject, m.Subject)
				require.Equal(t, msgs[i].MsgID, m.MsgID)
				require.Equal(t, string(msgs[i].Payload), string(m.Payload))
			}
		})
	})

	t.Run("Outbox", func(t *testing.T) {
		t.Parallel()
		t.Run("ListUnsentInOrderAndMarkSent", func(t *testing.T) {
			s, ctx := setup(t)
			msgs := []store.OutboxMessage{
				{Subject: "troupe.tasks.pm", MsgID: "m1", Payload: []byte(`{"a":1}`), Headers: map[string]string{"Troupe-Job": "j1"}, CreatedAt: at(1)},
				{Subject: "troupe.tasks.developer", MsgID: "m2", Payload: []byte{0, 1, 2, 255}, CreatedAt: at(1)},
				{Subject: "troupe.events.j1", MsgID: "m3", Payload: []byte("x"), CreatedAt: at(0)},
			}
			require.NoError(t, s.OutboxInsert(ctx, msgs))
			require.NoError(t, s.OutboxInsert(ctx, nil))

			got, err := s.OutboxListUnsent(ctx, 10)
			require.NoError(t, err)
			require.Len(t, got, 3)
			for i, m := range got {
				require.Positive(t, m.Seq)
				if i > 0 {
					require.Greater(t, m.Seq, got[i-1].Seq)
				}
				want := msgs[i]
				want.Seq = m.Seq
				require.Equal(t, want, m)
			}

			first, err := s.OutboxListUnsent(ctx, 2)
			require.NoError(t, err)
			require.Equal(t, got[:2], first)

			require.NoError(t, s.OutboxDeleteSent(ctx, []int64{got[0].Seq, got[1].Seq}))
			require.NoError(t, s.OutboxDeleteSent(ctx, nil))
			require.NoError(t, s.OutboxDeleteSent(ctx, []int64{got[0].Seq, 1 << 40})) // again, and unknown

			require.NoError(t, s.OutboxInsert(ctx, []store.OutboxMessage{{Subject: "later", MsgID: "m4", Payload: []byte("y")}}))
			rest, err := s.OutboxListUnsent(ctx, 0)
			require.NoError(t, err)
			require.Len(t, rest, 2)
			require.Equal(t, got[2], rest[0])
			require.Equal(t, "later", rest[1].Subject)
			require.Greater(t, rest[1].Seq, got[2].Seq)
			require.Nil(t, rest[1].Headers)
			require.WithinDuration(t, time.Now(), rest[1].CreatedAt, time.Minute)

			require.NoError(t, s.OutboxDeleteSent(ctx, []int64{rest[0].Seq, rest[1].Seq}))
			none, err := s.OutboxListUnsent(ctx, 10)
			require.NoError(t, err)
			require.Empty(t, none)

			// Sent rows leave the table: it holds what is in flight, not
			// every message ever published.
			db, ok := s.(interface{ DB() *sql.DB })
			require.True(t, ok, "the store has no DB()")
			var rows int
			require.NoError(t, db.DB().QueryRowContext(ctx, `SELECT count(*) FROM outbox`).Scan(&rows))
			require.Zero(t, rows)
		})

		// insert adds n messages and returns them as OutboxListUnsent does.
		insert := func(t *testing.T, ctx context.Context, s store.Store, n int) []store.OutboxMessage {
			t.Helper()
			var msgs []store.OutboxMessage
			for i := range n {
				msgs = append(msgs, store.OutboxMessage{Subject: fmt.Sprintf("s.%d", i), MsgID: fmt.Sprintf("m%d", i),
					Payload: []byte{byte(i)}, Headers: map[string]string{"N": fmt.Sprint(i)}, CreatedAt: at(i)})
			}
			require.NoError(t, s.OutboxInsert(ctx, msgs))
			got, err := s.OutboxListUnsent(ctx, n+1)
			require.NoError(t, err)
			require.Len(t, got, n)
			return got
		}
		claim := func(t *testing.T, ctx context.Context, s store.Store, p store.OutboxClaimParams) []store.OutboxMessage {
			t.Helper()
			got, err := s.OutboxClaim(ctx, p)
			require.NoError(t, err)
			return got
		}
		seqs := func(msgs []store.OutboxMessage) []int64 {
			out := []int64{}
			for _, m := range msgs {
				out = append(out, m.Seq)
			}
			return out
		}
		// lease is short enough to wait out, long enough that a claim made
		// right after another still falls inside it.
		const lease = 300 * time.Millisecond

		t.Run("ClaimInOrderUpToLimit", func(t *testing.T) {
			s, ctx := setup(t)
			all := insert(t, ctx, s, 5)

			first := claim(t, ctx, s, store.OutboxClaimParams{Owner: "a", Limit: 3})
			require.Equal(t, all[:3], first) // every field, in seq order
			// Claimed rows are not claimed again, not even by their owner.
			rest := claim(t, ctx, s, store.OutboxClaimParams{Owner: "a"})
			require.Equal(t, all[3:], rest)
			require.Empty(t, claim(t, ctx, s, store.OutboxClaimParams{Owner: "b"}))

			// Listing shows every unsent row, claimed or not.
			listed, err := s.OutboxListUnsent(ctx, 0)
			require.NoError(t, err)
			require.Equal(t, all, listed)

			_, err = s.OutboxClaim(ctx, store.OutboxClaimParams{})
			require.Error(t, err, "a claim needs an owner")
		})

		t.Run("ClaimBySubject", func(t *testing.T) {
			s, ctx := setup(t)
			subjects := []string{
				"troupe.tasks.developer",                  // 0
				"troupe.tasks.tester",                     // 1
				"troupe.review.developer",                 // 2
				"troupe.events.j1.output_staged",          // 3
				"troupe.events.j1.output_promoted",        // 4
				"TROUPE.review.developer",                 // 5: case differs
				"troupe.events.j1.x.output_staged",        // 6: a token too many
				"troupe.events.j1.outputXstaged",          // 7: LIKE's _ must not match X
				"troupe.events.j1.OUTPUT_STAGED",          // 8: case differs
				"troupe.dlq.workers-developer",            // 9
				"troupe.tasks",                            // 10: ">" needs a token
				"troupe.events.j2.output_staged",          // 11
				"troupe.review.developer.again",           // 12: not the exact subject
				"other.events.j1.output_staged",           // 13
				"troupe.events.j1.output_staged.too_deep", // 14
			}
			var msgs []store.OutboxMessage
			for i, subj := range subjects {
				msgs = append(msgs, store.OutboxMessage{Subject: subj, MsgID: fmt.Sprint("m", i), Payload: []byte{byte(i)}, CreatedAt: at(i)})
			}
			require.NoError(t, s.OutboxInsert(ctx, msgs))
			all, err := s.OutboxListUnsent(ctx, 0)
			require.NoError(t, err)
			require.Len(t, all, len(subjects))
			pick := func(idx ...int) []int64 {
				var out []store.OutboxMessage
				for _, i := range idx {
					out = append(out, all[i])
				}
				return seqs(out)
			}

			// A developer worker's relay: its review requests, the events it
			// writes, its dead letters; nothing else, in seq order.
			worker := claim(t, ctx, s, store.OutboxClaimParams{Owner: "worker", Subjects: []string{
				"troupe.review.developer", "troupe.events.*.output_staged", "troupe.dlq.workers-developer",
			}})
			require.Equal(t, pick(2, 3, 9, 11), seqs(worker))
			require.Equal(t, all[3], worker[1], "every field")

			// ">" takes one or more trailing tokens; "*" at the start works too.
			require.Equal(t, pick(0, 1), seqs(claim(t, ctx, s, store.OutboxClaimParams{Owner: "tasks", Subjects: []string{"troupe.tasks.>"}})))
			require.Equal(t, pick(13), seqs(claim(t, ctx, s, store.OutboxClaimParams{Owner: "x", Subjects: []string{"*.events.j1.output_staged"}})))
			require.Empty(t, claim(t, ctx, s, store.OutboxClaimParams{Owner: "x", Subjects: []string{"troupe.nothing.>"}}))

			// The catch-all relay takes what is left.
			require.Equal(t, pick(4, 5, 6, 7, 8, 10, 12, 14), seqs(claim(t, ctx, s, store.OutboxClaimParams{Owner: "all"})))

			for _, bad := range []string{"troupe.>.x", "troupe..x", "troupe.*.x.*", ""} {
				_, err := s.OutboxClaim(ctx, store.OutboxClaimParams{Owner: "bad", Subjects: []string{bad}})
				require.Error(t, err, "filter %q", bad)
			}
		})

		t.Run("ClaimLimitDefaultsTo100", func(t *testing.T) {
			s, ctx := setup(t)
			insert(t, ctx, s, 120)
			require.Len(t, claim(t, ctx, s, store.OutboxClaimParams{Owner: "a"}), 100)
			require.Len(t, claim(t, ctx, s, store.OutboxClaimParams{Owner: "a", Limit: -1}), 20)
		})

		t.Run("ClaimHoldsForTheLease", func(t *testing.T) {
			s, ctx := setup(t)
			all := insert(t, ctx, s, 2)
			require.Equal(t, seqs(all[:1]), seqs(claim(t, ctx, s, store.OutboxClaimParams{Owner: "a", Limit: 1}))) // default lease, 30s
			start := time.Now()
			require.Equal(t, seqs(all[1:]), seqs(claim(t, ctx, s, store.OutboxClaimParams{Owner: "a", Lease: lease})))

			got := claim(t, ctx, s, store.OutboxClaimParams{Owner: "b"})
			if time.Since(start) < lease {
				require.Empty(t, got, "claimed while a's lease holds")
			}
			// Once the short lease ran out, b gets that row, and only it.
			time.Sleep(time.Until(start.Add(lease)))
			require.Eventually(t, func() bool {
				got = claim(t, ctx, s, store.OutboxClaimParams{Owner: "b"})
				return len(got) > 0
			}, 5*time.Second, 10*time.Millisecond)
			require.Equal(t, seqs(all[1:]), seqs(got))
			require.Empty(t, claim(t, ctx, s, store.OutboxClaimParams{Owner: "c"}))
		})

		t.Run("ConcurrentClaimersNeverShareARow", func(t *testing.T) {
			s, ctx := setup(t)
			const rows, claimers = 200, 8
			var batch []store.OutboxMessage
			for i := range rows {
				batch = append(batch, store.OutboxMessage{Subject: "s", Payload: []byte(fmt.Sprint(i))})
			}
			require.NoError(t, s.OutboxInsert(ctx, batch))

			got := make([][]int64, claimers)
			errs := make([]error, claimers)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range claimers {
				wg.Go(func() {
					<-start
					for {
						msgs, err := s.OutboxClaim(ctx, store.OutboxClaimParams{Owner: fmt.Sprint("relay-", i), Limit: 7})
						if err != nil {
							errs[i] = err
							return
						}
						if len(msgs) == 0 {
							return
						}
						for j, m := range msgs {
							if j > 0 && m.Seq <= msgs[j-1].Seq {
								errs[i] = fmt.Errorf("claim out of order: %v", seqs(msgs))
								return
							}
						}
						got[i] = append(got[i], seqs(msgs)...)
					}
				})
			}
			close(start)
			wg.Wait()
			seen := map[int64]int{}
			for i := range claimers {
				require.NoError(t, errs[i])
				for _, seq := range got[i] {
					seen[seq]++
				}
			}
			require.Len(t, seen, rows)
			for seq, n := range seen {
				require.Equal(t, 1, n, "seq %d claimed %d times", seq, n)
			}
		})

		t.Run("RowsNotDueAreSkippedUntilDue", func(t *testing.T) {
			s, ctx := setup(t)
			all := insert(t, ctx, s, 3)
			require.Len(t, claim(t, ctx, s, store.OutboxClaimParams{Owner: "a"}), 3)

			due := time.Now().Add(lease)
			n, err := s.OutboxMarkFailed(ctx, all[0].Seq, "boom", due)
			require.NoError(t, err)
			require.Equal(t, 1, n)
			n, err = s.OutboxMarkFailed(ctx, all[1].Seq, "bang", time.Time{}) // at once
			require.NoError(t, err)
			require.Equal(t, 1, n)

			// The failing first row does not hold up the second; the third
			// is still a's.
			got := claim(t, ctx, s, store.OutboxClaimParams{Owner: "b"})
			if time.Now().Before(due) {
				require.Equal(t, seqs(all[1:2]), seqs(got))
			}
			want := all[1]
			want.Attempts, want.LastError = 1, "bang"
			require.Equal(t, want, got[0])
			require.True(t, got[0].NextAttemptAt.IsZero())

			time.Sleep(time.Until(due))
			require.Eventually(t, func() bool {
				got = claim(t, ctx, s, store.OutboxClaimParams{Owner: "b"})
				return len(got) > 0
			}, 5*time.Second, 10*time.Millisecond)
			require.Len(t, got, 1)
			want = all[0]
			want.Attempts, want.LastError, want.NextAttemptAt = 1, "boom", due.UTC().Truncate(time.Microsecond)
			require.Equal(t, want, got[0])
		})

		t.Run("MarkFailedCountsAndReleases", func(t *testing.T) {
			s, ctx := setup(t)
			all := insert(t, ctx, s, 1)
			seq := all[0].Seq
			for i := 1; i <= 3; i++ {
				got := claim(t, ctx, s, store.OutboxClaimParams{Owner: fmt.Sprint("relay-", i)})
				require.Equal(t, []int64{seq}, seqs(got), "released by the failure before")
				require.Equal(t, i-1, got[0].Attempts)
				n, err := s.OutboxMarkFailed(ctx, seq, fmt.Sprint("failure ", i), time.Time{})
				require.NoError(t, err)
				require.Equal(t, i, n)
			}
			listed, err := s.OutboxListUnsent(ctx, 0)
			require.NoError(t, err)
			require.Len(t, listed, 1)
			require.Equal(t, 3, listed[0].Attempts)
			require.Equal(t, "failure 3", listed[0].LastError)

			// A long error is cut to 2000 bytes, between characters.
			long := "x" + strings.Repeat("é", 1500)
			_, err = s.OutboxMarkFailed(ctx, seq, long, time.Time{})
			require.NoError(t, err)
			listed, err = s.OutboxListUnsent(ctx, 0)
			require.NoError(t, err)
			require.LessOrEqual(t, len(listed[0].LastError), 2000)
			require.GreaterOrEqual(t, len(listed[0].LastError), 1998)
			require.True(t, utf8.ValidString(listed[0].LastError))
			require.True(t, strings.HasPrefix(long, listed[0].LastError))
			require.Equal(t, 4, listed[0].Attempts)

			// What no TEXT column takes is made to fit.
			_, err = s.OutboxMarkFailed(ctx, seq, "bad \xff\x00 bytes", time.Time{})
			require.NoError(t, err)
			listed, err = s.OutboxListUnsent(ctx, 0)
			require.NoError(t, err)
			require.True(t, utf8.ValidString(listed[0].LastError))
			require.Contains(t, listed[0].LastError, "bad ")
			require.Contains(t, listed[0].LastError, " bytes")
		})

		t.Run("MarkSentRemovesFromClaims", func(t *testing.T) {
			s, ctx := setup(t)
			all := insert(t, ctx, s, 4)
			require.Len(t, claim(t, ctx, s, store.OutboxClaimParams{Owner: "a", Limit: 2, Lease: time.Millisecond}), 2)
			// Sent: one claimed, one never claimed.
			require.NoError(t, s.OutboxDeleteSent(ctx, []int64{all[0].Seq, all[2].Seq}))
			time.Sleep(5 * time.Millisecond) // the lease is over
			got := claim(t, ctx, s, store.OutboxClaimParams{Owner: "b"})
			require.Equal(t, []int64{all[1].Seq, all[3].Seq}, seqs(got))
			require.NoError(t, s.OutboxDeleteSent(ctx, seqs(got)))
			require.Empty(t, claim(t, ctx, s, store.OutboxClaimParams{Owner: "c"}))
			listed, err := s.OutboxListUnsent(ctx, 0)
			require.NoError(t, err)
			require.Empty(t, listed)
		})

		t.Run("MarkFailedUnknownIsNotFound", func(t *testing.T) {
			s, ctx := setup(t)
			_, err := s.OutboxMarkFailed(ctx, 1<<40, "boom", time.Time{})
			require.ErrorIs(t, err, store.ErrNotFound)
		})

		t.Run("ClaimInTx", func(t *testing.T) {
			s, ctx := setup(t)
			all := insert(t, ctx, s, 2)
			rollback := errors.New("roll back")
			require.ErrorIs(t, s.InTx(ctx, func(q store.Querier) error {
				got, err := q.OutboxClaim(ctx, store.OutboxClaimParams{Owner: "a", Limit: 1})
				require.NoError(t, err)
				require.Equal(t, all[:1], got)
				n, err := q.OutboxMarkFailed(ctx, got[0].Seq, "boom", time.Now().Add(time.Hour))
				require.NoError(t, err)
				require.Equal(t, 1, n)
				return rollback
			}), rollback)
			// The claim and the failure went with the transaction.
			require.Equal(t, all, claim(t, ctx, s, store.OutboxClaimParams{Owner: "b"}))
		})
	})

	t.Run("DeadLetter", func(t *testing.T) {
		t.Parallel()

		ids := func(dls []store.DeadLetter) []string {
			var out []string
			for _, d := range dls {
				out = append(out, d.ID)
			}
			return out
		}

		t.Run("InsertGetAndList", func(t *testing.T) {
			s, ctx := setup(t)
			full := store.DeadLetter{
				ID: uuid.NewString(), Source: "worker", Subject: "troupe.tasks.pm", Payload: `{"task_id":"t"}`,
				Headers: map[string]string{"Nats-Msg-Id": "abc"}, Reason: "bad json", Class: "permanent", Attempts: 3,
				StreamSeq: 1<<63 + 5, CreatedAt: at(1), ReplayOf: "dl0", TaskID: "t", JobID: "j", Stream: "TASKS",
			}
			created, err := s.DeadLetterInsert(ctx, full)
			require.NoError(t, err)
			require.True(t, created)
			got, err := s.DeadLetterGetByID(ctx, full.ID)
			require.NoError(t, err)
			want := full
			want.Status = "open"
			require.Equal(t, want, got)
			require.Empty(t, got.ResolvedBy)
			require.True(t, got.ResolvedAt.IsZero())

			others := []store.DeadLetter{
				{ID: uuid.NewString(), Source: "review", Reason: "r", Class: "transient", CreatedAt: at(2)},
				{ID: uuid.NewString(), Source: "worker", Reason: "r", Class: "exhausted", Status: "discarded", CreatedAt: at(3)},
			}
			for _, d := range others {
				created, err := s.DeadLetterInsert(ctx, d)
				require.NoError(t, err)
				require.True(t, created)
			}
			for _, tt := range []struct {
				name string
				p    store.DeadLetterListParams
				want []string
			}{
				{"All", store.DeadLetterListParams{}, []string{others[1].ID, others[0].ID, full.ID}},
				{"Status", store.DeadLetterListParams{Status: "open"}, []string{others[0].ID, full.ID}},
				{"Source", store.DeadLetterListParams{Source: "worker"}, []string{others[1].ID, full.ID}},
				{"StatusAndSource", store.DeadLetterListParams{Status: "open", Source: "worker"}, []string{full.ID}},
				{"Limit", store.DeadLetterListParams{Limit: 1}, []string{others[1].ID}},
			} {
				list, err := s.DeadLetterList(ctx, tt.p)
				require.NoError(t, err, tt.name)
				require.Equal(t, tt.want, ids(list), tt.name)
			}
		})

		t.Run("InsertIsIdempotentByID", func(t *testing.T) {
			s, ctx := setup(t)
			first := store.DeadLetter{ID: uuid.NewString(), Source: "worker", Reason: "first", Class: "permanent", CreatedAt: at(1)}
			created, err := s.DeadLetterInsert(ctx, first)
			require.NoError(t, err)
			require.True(t, created)

			// The same id again, with other fields, writes nothing.
			again := first
			again.Reason, again.Source, again.Status, again.CreatedAt = "second", "review", "discarded", at(2)
			created, err = s.DeadLetterInsert(ctx, again)
			require.NoError(t, err)
			require.False(t, created)

			got, err := s.DeadLetterGetByID(ctx, first.ID)
			require.NoError(t, err)
			want := first
			want.Status = "open"
			require.Equal(t, want, got)
			list, err := s.DeadLetterList(ctx, store.DeadLetterListParams{})
			require.NoError(t, err)
			require.Len(t, list, 1)

			// Also inside a transaction, which goes on working.
			require.NoError(t, s.InTx(ctx, func(q store.Querier) error {
				created, err := q.DeadLetterInsert(ctx, again)
				require.NoError(t, err)
				require.False(t, created)
				created, err = q.DeadLetterInsert(ctx, store.DeadLetter{Source: "worker"})
				require.NoError(t, err)
				require.True(t, created)
				return nil
			}))
			list, err = s.DeadLetterList(ctx, store.DeadLetterListParams{})
			require.NoError(t, err)
			require.Len(t, list, 2)
		})

		t.Run("InsertRace", func(t *testing.T) {
			s, ctx := setup(t)
			d := store.DeadLetter{ID: uuid.NewString(), Source: "worker", CreatedAt: at(1)}
			const n = 8
			var (
				wg      sync.WaitGroup
				mu      sync.Mutex
				creates int
				errs    []error
			)
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					created, err := s.DeadLetterInsert(ctx, d)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						errs = append(errs, err)
					}
					if created {
						creates++
					}
				}()
			}
			wg.Wait()
			require.Empty(t, errs)
			require.Equal(t, 1, creates)
		})

		t.Run("KeepsResolvedFields", func(t *testing.T) {
			s, ctx := setup(t)
			d := store.DeadLetter{
				ID: uuid.NewString(), Source: "worker", Status: "replayed", CreatedAt: at(1),
				ResolvedBy: "alice", ResolvedAt: time.Date(2024, 3, 2, 1, 2, 3, 456789000, time.UTC),
			}
			created, err := s.DeadLetterInsert(ctx, d)
			require.NoError(t, err)
			require.True(t, created)
			got, err := s.DeadLetterGetByID(ctx, d.ID)
			require.NoError(t, err)
			require.Equal(t, d, got)
		})

		t.Run("FillsIDAndTime", func(t *testing.T) {
			s, ctx := setup(t)
			created, err := s.DeadLetterInsert(ctx, store.DeadLetter{Source: "worker"})
			require.NoError(t, err)
			require.True(t, created)
			list, err := s.DeadLetterList(ctx, store.DeadLetterListParams{})
			require.NoError(t, err)
			require.Len(t, list, 1)
			_, err = uuid.Parse(list[0].ID)
			require.NoError(t, err)
			require.WithinDuration(t, time.Now(), list[0].CreatedAt, time.Minute)
			require.Equal(t, "open", list[0].Status)
			require.True(t, list[0].ResolvedAt.IsZero())
		})

		t.Run("ListFilters", func(t *testing.T) {
			s, ctx := setup(t)
			rows := []store.DeadLetter{
				{Source: "worker", Class: "permanent", Reason: "Bad JSON in payload", JobID: "j1", TaskID: "t1"},
				{Source: "worker", Class: "transient", Reason: "timeout talking to model", JobID: "j1", TaskID: "t2"},
				{Source: "review", Class: "exhausted", Reason: "100% of attempts used", JobID: "j2", TaskID: "t3", ReplayOf: "d1"},
				{Source: "orchestrator", Class: "permanent", Reason: "a_b missing", JobID: "j2", ReplayOf: "d1"},
				{Source: "worker", Class: "permanent", Reason: "axb missing", Status: "discarded", TaskID: "t1", ReplayOf: "d2"},
			}
			for i := range rows {
				rows[i].ID = fmt.Sprintf("d%d", i+1)
				rows[i].CreatedAt = at(i)
				created, err := s.DeadLetterInsert(ctx, rows[i])
				require.NoError(t, err)
				require.True(t, created)
			}
			for _, tt := range []struct {
				name string
				p    store.DeadLetterListParams
				want []string
			}{
				{"All", store.DeadLetterListParams{}, []string{"d5", "d4", "d3", "d2", "d1"}},
				{"Status", store.DeadLetterListParams{Status: "discarded"}, []string{"d5"}},
				{"Source", store.DeadLetterListParams{Source: "review"}, []string{"d3"}},
				{"Class", store.DeadLetterListParams{Class: "permanent"}, []string{"d5", "d4", "d1"}},
				{"JobID", store.DeadLetterListParams{JobID: "j1"}, []string{"d2", "d1"}},
				{"TaskID", store.DeadLetterListParams{TaskID: "t1"}, []string{"d5", "d1"}},
				{"ReplayOf", store.DeadLetterListParams{ReplayOf: "d1"}, []string{"d4", "d3"}},
				{"QueryIgnoresCase", store.DeadLetterListParams{Query: "json"}, []string{"d1"}},
				{"QueryUpperCase", store.DeadLetterListParams{Query: "MISSING"}, []string{"d5", "d4"}},
				{"QueryPercentIsLiteral", store.DeadLetterListParams{Query: "%"}, []string{"d3"}},
				{"QueryUnderscoreIsLiteral", store.DeadLetterListParams{Query: "_"}, []string{"d4"}},
				{"QueryBackslashIsLiteral", store.DeadLetterListParams{Query: `\`}, nil},
				{"Combined", store.DeadLetterListParams{Source: "worker", Class: "permanent", Status: "open"}, []string{"d1"}},
				{"CombinedWithQuery", store.DeadLetterListParams{Class: "permanent", Query: "missing", JobID: "j2"}, []string{"d4"}},
				{"NoMatch", store.DeadLetterListParams{JobID: "j1", Source: "review"}, nil},
				{"BeforeWithoutID", store.DeadLetterListParams{Before: at(2)}, []string{"d2", "d1"}},
				{"BeforeAndFilter", store.DeadLetterListParams{Before: at(4), BeforeID: "d5", Class: "permanent"}, []string{"d4", "d1"}},
			} {
				list, err := s.DeadLetterList(ctx, tt.p)
				require.NoError(t, err, tt.name)
				require.Equal(t, tt.want, ids(list), tt.name)
			}
		})

		t.Run("PagesWithoutGapsOrDuplicates", func(t *testing.T) {
			s, ctx := setup(t)
			var want, wantWorker []store.DeadLetter
			for i := range 23 {
				source := "worker"
				if i%2 == 1 {
					source = "review"
				}
				// Three dead letters per instant, so pages split ties.
				d := store.DeadLetter{ID: uuid.NewString(), Source: source, Status: "open", CreatedAt: at(i / 3)}
				created, err := s.DeadLetterInsert(ctx, d)
				require.NoError(t, err)
				require.True(t, created)
				want = append(want, d)
				if source == "worker" {
					wantWorker = append(wantWorker, d)
				}
			}
			newestFirst := func(dls []store.DeadLetter) {
				sort.Slice(dls, func(i, j int) bool {
					if !dls[i].CreatedAt.Equal(dls[j].CreatedAt) {
						return dls[i].CreatedAt.After(dls[j].CreatedAt)
					}
					return dls[i].ID > dls[j].ID
				})
			}
			newestFirst(want)
			newestFirst(wantWorker)

			for _, tt := range []struct {
				name string
				p    store.DeadLetterListParams
				want []store.DeadLetter
			}{
				{"All", store.DeadLetterListParams{Limit: 4}, want},
				{"Filtered", store.DeadLetterListParams{Limit: 3, Source: "worker"}, wantWorker},
			} {
				var got []store.DeadLetter
				p := tt.p
				for pages := 0; ; pages++ {
					require.Less(t, pages, 10, "too many pages")
					page, err := s.DeadLetterList(ctx, p)
					require.NoError(t, err, tt.name)
					require.LessOrEqual(t, len(page), p.Limit, tt.name)
					if len(page) == 0 {
						break
					}
					got = append(got, page...)
					last := page[len(page)-1]
					p.Before, p.BeforeID = last.CreatedAt, last.ID
				}
				require.Equal(t, tt.want, got, tt.name)
			}
		})

		t.Run("ListLimitDefaultsTo100", func(t *testing.T) {
			s, ctx := setup(t)
			for i := range 102 {
				_, err := s.DeadLetterInsert(ctx, store.DeadLetter{Source: "worker", CreatedAt: at(i)})
				require.NoError(t, err)
			}
			list, err := s.DeadLetterList(ctx, store.DeadLetterListParams{})
			require.NoError(t, err)
			require.Len(t, list, 100)
			require.Equal(t, at(101), list[0].CreatedAt)
		})

		t.Run("ResolveOnlyFromOpen", func(t *testing.T) {
			s, ctx := setup(t)
			d := store.DeadLetter{ID: uuid.NewString(), Source: "worker", Reason: "r", CreatedAt: at(1)}
			_, err := s.DeadLetterInsert(ctx, d)
			require.NoError(t, err)

			before := time.Now().Truncate(time.Microsecond)
			moved, err := s.DeadLetterResolve(ctx, d.ID, "replayed", "alice")
			require.NoError(t, err)
			after := time.Now()
			require.True(t, moved)
			got, err := s.DeadLetterGetByID(ctx, d.ID)
			require.NoError(t, err)
			require.Equal(t, "replayed", got.Status)
			require.Equal(t, "alice", got.ResolvedBy)
			require.Equal(t, time.UTC, got.ResolvedAt.Location())
			require.False(t, got.ResolvedAt.Before(before), "resolved_at %v before %v", got.ResolvedAt, before)
			require.False(t, got.ResolvedAt.After(after), "resolved_at %v after %v", got.ResolvedAt, after)
			want := d
			want.Status, want.ResolvedBy, want.ResolvedAt = "replayed", "alice", got.ResolvedAt
			require.Equal(t, want, got)

			// Once resolved it stays as it is.
			moved, err = s.DeadLetterResolve(ctx, d.ID, "discarded", "bob")
			require.NoError(t, err)
			require.False(t, moved)
			again, err := s.DeadLetterGetByID(ctx, d.ID)
			require.NoError(t, err)
			require.Equal(t, got, again)

			// A dead letter inserted with another status is not open either.
			discarded := store.DeadLetter{ID: uuid.NewString(), Source: "worker", Status: "discarded", CreatedAt: at(2)}
			_, err = s.DeadLetterInsert(ctx, discarded)
			require.NoError(t, err)
			moved, err = s.DeadLetterResolve(ctx, discarded.ID, "replayed", "carol")
			require.NoError(t, err)
			require.False(t, moved)
			gotDiscarded, err := s.DeadLetterGetByID(ctx, discarded.ID)
			require.NoError(t, err)
			require.Equal(t, discarded, gotDiscarded)

			// Neither is open now.
			open, err := s.DeadLetterList(ctx, store.DeadLetterListParams{Status: "open"})
			require.NoError(t, err)
			require.Empty(t, open)
		})

		t.Run("ResolveRace", func(t *testing.T) {
			s, ctx := setup(t)
			d := store.DeadLetter{ID: uuid.NewString(), Source: "worker"}
			_, err := s.DeadLetterInsert(ctx, d)
			require.NoError(t, err)
			const n = 8
			var (
				wg    sync.WaitGroup
				mu    sync.Mutex
				moves []string
				errs  []error
			)
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					by := fmt.Sprintf("user%d", i)
					moved, err := s.DeadLetterResolve(ctx, d.ID, "discarded", by)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						errs = append(errs, err)
					}
					if moved {
						moves = append(moves, by)
					}
				}()
			}
			wg.Wait()
			require.Empty(t, errs)
			require.Len(t, moves, 1)
			got, err := s.DeadLetterGetByID(ctx, d.ID)
			require.NoError(t, err)
			require.Equal(t, moves[0], got.ResolvedBy)
		})

		t.Run("NotFound", func(t *testing.T) {
			s, ctx := setup(t)
			_, err := s.DeadLetterGetByID(ctx, uuid.NewString())
			require.ErrorIs(t, err, store.ErrNotFound)
			moved, err := s.DeadLetterResolve(ctx, uuid.NewString(), "replayed", "alice")
			require.ErrorIs(t, err, store.ErrNotFound)
			require.False(t, moved)
		})
	})

	t.Run("ModelCall", func(t *testing.T) {
		t.Parallel()

		t.Run("InsertAgainKeepsOne", func(t *testing.T) {
			s, ctx := setup(t)
			job := uuid.NewString()
			call := store.ModelCall{ID: uuid.NewString(), JobID: job, Role: "pm", Model: "m", PromptTokens: 10, Outcome: "ok"}
			require.NoError(t, s.ModelCallInsert(ctx, []store.ModelCall{call}))
			// A write whose commit went unanswered is made again.
			require.NoError(t, s.ModelCallInsert(ctx, []store.ModelCall{call, {ID: uuid.NewString(), JobID: job, Role: "pm", Model: "m", PromptTokens: 1, Outcome: "ok"}}))
			tokens, err := s.ModelCallTokens(ctx, job)
			require.NoError(t, err)
			require.Equal(t, int64(11), tokens)
		})

		t.Run("TotalsByRoleAndModel", func(t *testing.T) {
			s, ctx := setup(t)
			job, other := uuid.NewString(), uuid.NewString()
			calls := []store.ModelCall{
				{ID: uuid.NewString(), JobID: job, TaskID: "t1", Role: "developer", Revision: 1, Model: "gpt-b",
					PromptTokens: 10, CompletionTokens: 5, LatencyMS: 100, Outcome: "ok", CreatedAt: at(1)},
				{JobID: job, TaskID: "t1", Role: "developer", Revision: 1, Model: "gpt-a",
					PromptTokens: 1, CompletionTokens: 2, LatencyMS: 3, Outcome: "ok"},
				{JobID: job, TaskID: "t1", Role: "developer", Revision: 2, Model: "gpt-b",
					PromptTokens: 7, LatencyMS: 50, Outcome: "error", Error: "timeout"},
				{JobID: job, TaskID: "t2", Role: "architect", Model: "gpt-b", LatencyMS: 20, Outcome: "retry", Error: "429"},
				{JobID: job, TaskID: "t1", Role: "developer", Revision: 3, Model: "gpt-b",
					PromptTokens: 3, CompletionTokens: 4, LatencyMS: 10, Outcome: "rejected", Error: "bad json"},
				// Bytewise order: upper case before lower case.
				{JobID: job, TaskID: "t1", Role: "developer", Model: "Zeta",
					PromptTokens: 3_000_000_000, CompletionTokens: 2_000_000_000, LatencyMS: 1, Outcome: "ok"},
				{JobID: other, Role: "developer", Model: "gpt-b", PromptTokens: 1000, Outcome: "ok"},
			}
			require.NoError(t, s.ModelCallInsert(ctx, calls[:2]))
			require.NoError(t, s.ModelCallInsert(ctx, calls[2:]))
			require.NoError(t, s.ModelCallInsert(ctx, nil))

			totals, err := s.ModelCallTotals(ctx, job)
			require.NoError(t, err)
			require.Equal(t, []store.ModelCallTotal{
				{Role: "architect", Model: "gpt-b", Calls: 1, Failed: 1, LatencyMS: 20},
				{Role: "developer", Model: "Zeta", Calls: 1, PromptTokens: 3_000_000_000, CompletionTokens: 2_000_000_000, LatencyMS: 1},
				{Role: "developer", Model: "gpt-a", Calls: 1, PromptTokens: 1, CompletionTokens: 2, LatencyMS: 3},
				{Role: "developer", Model: "gpt-b", Calls: 3, Failed: 2, PromptTokens: 20, CompletionTokens: 9, LatencyMS: 160},
			}, totals)

			tokens, err := s.ModelCallTokens(ctx, job)
			require.NoError(t, err)
			require.Equal(t, int64(10+5+1+2+7+3+4+5_000_000_000), tokens)
			tokens, err = s.ModelCallTokens(ctx, other)
			require.NoError(t, err)
			require.Equal(t, int64(1000), tokens)
		})

		t.Run("FillsIDsAndKeepsARecordedCall", func(t *testing.T) {
			s, ctx := setup(t)
			job := uuid.NewString()
			// Calls without an ID each get their own.
			require.NoError(t, s.ModelCallInsert(ctx, []store.ModelCall{
				{JobID: job, Role: "pm", Model: "m", PromptTokens: 1, Outcome: "ok"},
				{JobID: job, Role: "pm", Model: "m", PromptTokens: 1, Outcome: "ok"},
			}))
			id := uuid.NewString()
			require.NoError(t, s.ModelCallInsert(ctx, []store.ModelCall{
				{ID: id, JobID: job, Role: "pm", Model: "m", PromptTokens: 1, Outcome: "ok"},
			}))

			// A batch with an ID recorded already keeps that call as it was
			// (a write made again) and writes the others.
			err := s.ModelCallInsert(ctx, []store.ModelCall{
				{JobID: job, Role: "pm", Model: "m", PromptTokens: 100, Outcome: "ok"},
				{ID: id, JobID: job, Role: "pm", Model: "m", PromptTokens: 100, Outcome: "ok"},
			})
			require.NoError(t, err)

			totals, err := s.ModelCallTotals(ctx, job)
			require.NoError(t, err)
			require.Equal(t, []store.ModelCallTotal{{Role: "pm", Model: "m", Calls: 4, PromptTokens: 103}}, totals)
			tokens, err := s.ModelCallTokens(ctx, job)
			require.NoError(t, err)
			require.Equal(t, int64(103), tokens)
		})

		t.Run("ListByJobOldestFirst", func(t *testing.T) {
			s, ctx := setup(t)
			job, other := uuid.NewString(), uuid.NewString()
			first := store.ModelCall{ID: "c-1", JobID: job, TaskID: "t1", Role: "developer", Revision: 2, Model: "gpt-b",
				PromptTokens: 3_000_000_000, CompletionTokens: 5, LatencyMS: 100, Outcome: "ok", CreatedAt: at(1)}
			// Two calls of one instant come in id order.
			tieB := store.ModelCall{ID: "c-3b", JobID: job, TaskID: "t2", Role: "tester", Model: "m",
				LatencyMS: 20, Outcome: "error", Error: "timeout", CreatedAt: at(2)}
			tieA := store.ModelCall{ID: "c-3a", JobID: job, TaskID: "t2", Role: "tester", Model: "m",
				LatencyMS: 7, Outcome: "retry", Error: "429", CreatedAt: at(2)}
			last := store.ModelCall{ID: "c-0", JobID: job, Role: "pm", Model: "m", Outcome: "rejected", Error: "bad json",
				CreatedAt: at(3).Add(time.Microsecond)}
			require.NoError(t, s.ModelCallInsert(ctx, []store.ModelCall{last, tieB}))
			require.NoError(t, s.ModelCallInsert(ctx, []store.ModelCall{
				first, tieA, {JobID: other, Role: "pm", Model: "m", Outcome: "ok", CreatedAt: at(0)},
			}))

			calls, err := s.ModelCallListByJob(ctx, job)
			require.NoError(t, err)
			require.Equal(t, []store.ModelCall{first, tieA, tieB, last}, calls)

			calls, err = s.ModelCallListByJob(ctx, other)
			require.NoError(t, err)
			require.Len(t, calls, 1)
			require.NotEmpty(t, calls[0].ID)

			// Inside a transaction, its own calls are listed.
			require.NoError(t, s.InTx(ctx, func(q store.Querier) error {
				require.NoError(t, q.ModelCallInsert(ctx, []store.ModelCall{{ID: "c-9", JobID: job, Model: "m", Outcome: "ok", CreatedAt: at(9)}}))
				calls, err := q.ModelCallListByJob(ctx, job)
				require.NoError(t, err)
				require.Len(t, calls, 5)
				require.Equal(t, "c-9", calls[4].ID)
				return nil
			}))
		})

		t.Run("EmptyJob", func(t *testing.T) {
			s, ctx := setup(t)
			require.NoError(t, s.ModelCallInsert(ctx, []store.ModelCall{{JobID: uuid.NewString(), Role: "pm", Model: "m",
				PromptTokens: 5, Outcome: "ok"}}))
			calls, err := s.ModelCallListByJob(ctx, uuid.NewString())
			require.NoError(t, err)
			require.NotNil(t, calls)
			require.Empty(t, calls)
			totals, err := s.ModelCallTotals(ctx, uuid.NewString())
			require.NoError(t, err)
			require.NotNil(t, totals)
			require.Empty(t, totals)
			tokens, err := s.ModelCallTokens(ctx, uuid.NewString())
			require.NoError(t, err)
			require.Zero(t, tokens)
		})

		t.Run("InTx", func(t *testing.T) {
			s, ctx := setup(t)
			job := uuid.NewString()
			call := store.ModelCall{JobID: job, Role: "developer", Model: "m", PromptTokens: 4, CompletionTokens: 6,
				LatencyMS: 7, Outcome: "error", Error: "boom"}
			errBoom := errors.New("boom")

			// Rolled back: the transaction sees its calls, nobody after it does.
			err := s.InTx(ctx, func(q store.Querier) error {
				require.NoError(t, q.ModelCallInsert(ctx, []store.ModelCall{call, call}))
				tokens, err := q.ModelCallTokens(ctx, job)
				require.NoError(t, err)
				require.Equal(t, int64(20), tokens)
				totals, err := q.ModelCallTotals(ctx, job)
				require.NoError(t, err)
				require.Equal(t, []store.ModelCallTotal{{Role: "developer", Model: "m", Calls: 2, Failed: 2,
					PromptTokens: 8, CompletionTokens: 12, LatencyMS: 14}}, totals)
				return errBoom
			})
			require.ErrorIs(t, err, errBoom)
			totals, err := s.ModelCallTotals(ctx, job)
			require.NoError(t, err)
			require.Empty(t, totals)
			tokens, err := s.ModelCallTokens(ctx, job)
			require.NoError(t, err)
			require.Zero(t, tokens)

			// Committed.
			require.NoError(t, s.InTx(ctx, func(q store.Querier) error {
				return q.ModelCallInsert(ctx, []store.ModelCall{call})
			}))
			tokens, err = s.ModelCallTokens(ctx, job)
			require.NoError(t, err)
			require.Equal(t, int64(10), tokens)
		})
	})

	exerciseDashboard(t, setup)

	t.Run("InTx", func(t *testing.T) {
		t.Parallel()

		// writeAll writes a row of every table through q.
		writeAll := func(t *testing.T, ctx context.Context, q store.Querier) {
			t.Helper()
			job, created, err := q.JobCreate(ctx, store.JobCreateParams{
				Job:   store.Job{Title: "in tx", IdempotencyKey: "tx", Status: schemas.JobPlanning},
				Tasks: []store.Task{{Key: "a", Role: "pm", Status: schemas.TaskQueued}},
			})
			require.NoError(t, err)
			require.True(t, created)
			tasks, err := q.TaskListByJob(ctx, job.ID)
			require.NoError(t, err)
			require.Len(t, tasks, 1)
			out, _, err := q.OutputStage(ctx, store.Output{TaskID: tasks[0].ID, JobID: job.ID, Role: "pm", Revision: 1})
			require.NoError(t, err)
			require.NoError(t, q.ReviewInsert(ctx, store.Review{OutputID: out.ID, TaskID: tasks[0].ID, JobID: job.ID, Decision: "promote"}))
			a, err := q.ArtifactInsert(ctx, store.Artifact{Path: "tx.md", JobID: job.ID, TaskID: tasks[0].ID})
			require.NoError(t, err)
			require.Equal(t, 1, a.Version)
			a, err = q.ArtifactInsert(ctx, store.Artifact{Path: "tx.md", JobID: job.ID, TaskID: tasks[0].ID})
			require.NoError(t, err)
			require.Equal(t, 2, a.Version)
			require.NoError(t, q.LessonInsert(ctx, []store.Lesson{{Text: "l", Scope: "all", JobID: job.ID}}))
			require.NoError(t, q.EventInsert(ctx, []store.Event{{JobID: job.ID, Kind: schemas.EventJobSubmitted}}))
			// Writes a store holds back until its next statement are
			// there for the reads after them.
			events, err := q.EventListByJob(ctx, job.ID)
			require.NoError(t, err)
			require.Len(t, events, 1)
			require.NoError(t, q.OutboxInsert(ctx, []store.OutboxMessage{{Subject: "s", Payload: []byte("p")}}))
			require.NoError(t, q.ModelCallInsert(ctx, []store.ModelCall{{JobID: job.ID, Role: "pm", Model: "m",
				PromptTokens: 2, CompletionTokens: 3, Outcome: "ok"}}))
			created, err = q.DeadLetterInsert(ctx, store.DeadLetter{Source: "tx", JobID: job.ID})
			require.NoError(t, err)
			require.True(t, created)
			moved, err := q.JobSetStatus(ctx, store.JobSetStatusParams{ID: job.ID, To: schemas.JobRunning})
			require.NoError(t, err)
			require.True(t, moved)

			// The transaction sees its own writes.
			got, err := q.JobGetByID(ctx, job.ID)
			require.NoError(t, err)
			require.Equal(t, schemas.JobRunning, got.Status)
			again, created, err := q.JobCreate(ctx, store.JobCreateParams{Job: store.Job{Title: "again", IdempotencyKey: "tx"}})
			require.NoError(t, err)
			require.False(t, created)
			require.Equal(t, job.ID, again.ID)
			tokens, err := q.ModelCallTokens(ctx, job.ID)
			require.NoError(t, err)
			require.Equal(t, int64(5), tokens)
		}

		// requireEmpty checks no table has a row.
		requireEmpty := func(t *testing.T, ctx context.Context, s store.Store) {
			t.Helper()
			jobs, err := s.JobList(ctx, store.JobListParams{})
			require.NoError(t, err)
			require.Empty(t, jobs)
			outs, err := s.OutputList(ctx, store.OutputListParams{})
			require.NoError(t, err)
			require.Empty(t, outs)
			arts, err := s.ArtifactList(ctx, store.ArtifactListParams{})
			require.NoError(t, err)
			require.Empty(t, arts)
			lessons, err := s.LessonList(ctx, store.LessonListParams{})
			require.NoError(t, err)
			require.Empty(t, lessons)
			msgs, err := s.OutboxListUnsent(ctx, 10)
			require.NoError(t, err)
			require.Empty(t, msgs)
			dls, err := s.DeadLetterList(ctx, store.DeadLetterListParams{})
			require.NoError(t, err)
			require.Empty(t, dls)
		}

		t.Run("CommitsOnNil", func(t *testing.T) {
			s, ctx := setup(t)
			require.NoError(t, s.InTx(ctx, func(q store.Querier) error {
				writeAll(t, ctx, q)
				return nil
			}))
			jobs, err := s.JobList(ctx, store.JobListParams{})
			require.NoError(t, err)
			require.Len(t, jobs, 1)
			require.Equal(t, schemas.JobRunning, jobs[0].Status)
			events, err := s.EventListByJob(ctx, jobs[0].ID)
			require.NoError(t, err)
			require.Len(t, events, 1)
			reviews, err := s.ReviewListByJob(ctx, jobs[0].ID)
			require.NoError(t, err)
			require.Len(t, reviews, 1)
			tokens, err := s.ModelCallTokens(ctx, jobs[0].ID)
			require.NoError(t, err)
			require.Equal(t, int64(5), tokens)
			a, err := s.ArtifactGet(ctx, "tx.md", 0)
			require.NoError(t, err)
			require.Equal(t, 2, a.Version)
		})

		t.Run("RollsBackOnError", func(t *testing.T) {
			s, ctx := setup(t)
			errBoom := errors.New("boom")
			var jobID string
			err := s.InTx(ctx, func(q store.Querier) error {
				writeAll(t, ctx, q)
				jobs, err := q.JobList(ctx, store.JobListParams{})
				require.NoError(t, err)
				jobID = jobs[0].ID
				return errBoom
			})
			require.ErrorIs(t, err, errBoom)
			requireEmpty(t, ctx, s)
			events, err := s.EventListByJob(ctx, jobID)
			require.NoError(t, err)
			require.Empty(t, events)
			tasks, err := s.TaskListByJob(ctx, jobID)
			require.NoError(t, err)
			require.Empty(t, tasks)
			calls, err := s.ModelCallTotals(ctx, jobID)
			require.NoError(t, err)
			require.Empty(t, calls)

			// The store still works, and the key is free again.
			_, created, err := s.JobCreate(ctx, store.JobCreateParams{Job: store.Job{Title: "after", IdempotencyKey: "tx"}})
			require.NoError(t, err)
			require.True(t, created)
		})

		t.Run("RollsBackWhenAWriteFails", func(t *testing.T) {
			// A store may send a write with a later statement or the
			// commit: its error then comes from there, and the
			// transaction still rolls back whole.
			s, ctx := setup(t)
			err := s.InTx(ctx, func(q store.Querier) error {
				job, _, err := q.JobCreate(ctx, store.JobCreateParams{
					Job:   store.Job{Title: "doomed", IdempotencyKey: "tx", Status: schemas.JobPlanning},
					Tasks: []store.Task{{Key: "a", Role: "pm", Status: schemas.TaskQueued}},
				})
				if err != nil {
					return err
				}
				if err := q.ReviewInsert(ctx, store.Review{OutputID: "no-such-output", JobID: job.ID, Decision: "promote"}); err != nil {
					return err
				}
				return q.EventInsert(ctx, []store.Event{{JobID: job.ID, Kind: schemas.EventJobSubmitted}})
			})
			require.ErrorIs(t, err, store.ErrNotFound)
			require.ErrorContains(t, err, "no-such-output")
			requireEmpty(t, ctx, s)
			_, created, err := s.JobCreate(ctx, store.JobCreateParams{Job: store.Job{Title: "after", IdempotencyKey: "tx"}})
			require.NoError(t, err)
			require.True(t, created)
		})

		t.Run("RollsBackWhenCancelled", func(t *testing.T) {
			s, ctx := setup(t)
			cctx, cancel := context.WithCancel(ctx)
			err := s.InTx(cctx, func(q store.Querier) error {
				job, _, err := q.JobCreate(cctx, store.JobCreateParams{
					Job:   store.Job{Title: "cancelled", IdempotencyKey: "tx", Status: schemas.JobPlanning},
					Tasks: []store.Task{{Key: "a", Role: "pm", Status: schemas.TaskQueued}},
				})
				if err != nil {
					return err
				}
				cancel()
				// Its error, if any, may come only with the commit.
				_ = q.EventInsert(cctx, []store.Event{{JobID: job.ID, Kind: schemas.EventJobSubmitted}})
				return nil
			})
			require.ErrorIs(t, err, context.Canceled)
			requireEmpty(t, ctx, s)
			// The store still works, with every connection it kept.
			for i := range 30 {
				_, created, err := s.JobCreate(ctx, store.JobCreateParams{Job: store.Job{Title: "after", IdempotencyKey: fmt.Sprint("k", i)}})
				require.NoError(t, err)
				require.True(t, created)
			}
		})

		t.Run("RollsBackOnPanic", func(t *testing.T) {
			s, ctx := setup(t)
			require.PanicsWithValue(t, "boom", func() {
				_ = s.InTx(ctx, func(q store.Querier) error {
					writeAll(t, ctx, q)
					panic("boom")
				})
			})
			requireEmpty(t, ctx, s)
			require.NoError(t, s.Ping(ctx))
		})
	})

	t.Run("Time", func(t *testing.T) {
		t.Parallel()
		t.Run("RoundTripsInUTCToTheMicrosecond", func(t *testing.T) {
			s, ctx := setup(t)
			zone := time.FixedZone("UTC+5", 5*60*60)
			for i, in := range []time.Time{
				time.Date(2025, 6, 7, 8, 9, 10, 123456789, zone),
				time.Date(1969, 12, 31, 23, 59, 59, 999999999, time.UTC), // before the epoch
				time.Date(2262, 1, 1, 0, 0, 0, 1000, time.UTC),           // past int64 nanoseconds
			} {
				want := in.UTC().Truncate(time.Microsecond)
				job, _, err := s.JobCreate(ctx, store.JobCreateParams{
					Job:   store.Job{Title: fmt.Sprint(i), Status: schemas.JobPlanning, CreatedAt: in, UpdatedAt: in},
					Tasks: []store.Task{{Key: "a", Role: "pm", CreatedAt: in}},
				})
				require.NoError(t, err)
				require.Equal(t, want, job.CreatedAt)

				got, err := s.JobGetByID(ctx, job.ID)
				require.NoError(t, err)
				require.Equal(t, time.UTC, got.CreatedAt.Location())
				require.Equal(t, want, got.CreatedAt)
				require.Equal(t, want, got.UpdatedAt)

				tasks, err := s.TaskListByJob(ctx, job.ID)
				require.NoError(t, err)
				require.Equal(t, want, tasks[0].CreatedAt)

				out, _, err := s.OutputStage(ctx, store.Output{TaskID: tasks[0].ID, JobID: job.ID, Revision: 1, CreatedAt: in})
				require.NoError(t, err)
				require.Equal(t, want, out.CreatedAt)
				gotOut, err := s.OutputGetByID(ctx, out.ID)
				require.NoError(t, err)
				require.Equal(t, want, gotOut.CreatedAt)

				require.NoError(t, s.EventInsert(ctx, []store.Event{{JobID: job.ID, Kind: "k", Time: in}}))
				events, err := s.EventListByJob(ctx, job.ID)
				require.NoError(t, err)
				require.Equal(t, want, events[0].Time)
			}
		})
	})
}

// newTask creates a job with one developer task and returns the task.
func newTask(t *testing.T, s store.Store) store.Task {
	t.Helper()
	return newTaskWithRole(t, s, "developer")
}

// newTaskWithRole creates a job with one task of role and returns the task.
func newTaskWithRole(t *testing.T, s store.Store, role string) store.Task {
	t.Helper()
	ctx := context.Background()
	job, _, err := s.JobCreate(ctx, store.JobCreateParams{
		Job:   store.Job{Title: "job of " + role, Status: schemas.JobRunning},
		Tasks: []store.Task{{Key: role, Role: role, Status: schemas.TaskRunning}},
	})
	require.NoError(t, err)
	tasks, err := s.TaskListByJob(ctx, job.ID)
	require.NoError(t, err)
	require.Len(t, tasks, 1)
	return tasks[0]
}

func jobTitles(jobs []store.Job) []string {
	var out []string
	for _, j := range jobs {
		out = append(out, j.Title)
	}
	return out
}

func revisions(outs []store.Output) []int {
	var out []int
	for _, o := range outs {
		out = append(out, o.Revision)
	}
	return out
}

func contents(outs []store.Output) []string {
	var out []string
	for _, o := range outs {
		out = append(out, o.Content)
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func lessonIDs(lessons []store.Lesson) []string {
	ids := make([]string, len(lessons))
	for i, l := range lessons {
		ids[i] = l.ID
	}
	return ids
}
