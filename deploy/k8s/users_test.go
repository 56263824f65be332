package k8s_test

import (
	"encoding/json"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/store/postgres/pgroles"
)

// serviceOf is the NATS user and the PostgreSQL service of a container's
// troupe command.
func serviceOf(t *testing.T, args []string) (natsUser, dbService string) {
	t.Helper()
	switch args[0] {
	case "orchestrator":
		return bus.UserOrchestrator, pgroles.Orchestrator
	case "review":
		return bus.UserReview, pgroles.Review
	case "worker":
		role, ok := flagValue(args, "role")
		require.True(t, ok, "%v", args)
		return bus.WorkerUser(role), pgroles.Worker
	}
	t.Fatalf("no service for %v", args)
	return "", ""
}

// envFile reads KEY=value lines.
func envFile(t *testing.T, raw []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			out[k] = v
		}
	}
	return out
}

// TestEachServiceHasItsOwnUsers: every Deployment connects to NATS as its
// own service's user, from a Secret of its own holding exactly what
// troupe nats-config writes for that user (the overlay built with the
// files it really writes carries their passwords), and to PostgreSQL as
// its own service's role, with that role's password; only the migration
// Job has the owner's URL, and it creates the roles (migrate --roles) with
// the passwords the services use.
func TestEachServiceHasItsOwnUsers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	gen := exec.Command(troupeBinary(t), "nats-config", "--env-dir", dir)
	gen.Env = append(os.Environ(), "TROUPE_CONFIG=")
	out, err := gen.CombinedOutput()
	require.NoError(t, err, "%s", out)
	written := map[string][]byte{}
	for _, user := range serviceUsers() {
		written[user], err = os.ReadFile(filepath.Join(dir, user+".env"))
		require.NoError(t, err, "troupe nats-config writes no %s.env", user)
	}

	// The overlay, filled in with what nats-config wrote.
	mem := filesys.MakeFsInMemory()
	require.NoError(t, copyToMemory(mem, ".", "/k8s"))
	require.NoError(t, fillOverlay("/k8s/overlays/example", mem.ReadFile, mem.WriteFile, written))
	real, err := kustomize(mem, "/k8s/overlays/example", "overlays/example with troupe nats-config's files")
	require.NoError(t, err)

	builds := allBuilds(t)
	for name, objs := range map[string][]object{buildBase: builds[buildBase], buildOverlay: builds[buildOverlay], "real": real} {
		b := decodeBuild(t, name, objs)
		seen := map[string]bool{}
		for depName, d := range b.deployments {
			where := name + ": Deployment " + depName
			c := d.Spec.Template.Spec.Containers[0]
			user, service := serviceOf(t, c.Args)
			require.False(t, seen[user], "%s: a second Deployment as %s", where, user)
			seen[user] = true

			// NATS: a Secret of its own, exactly nats-config's file.
			require.Len(t, c.EnvFrom, 1, where)
			ref := c.EnvFrom[0].SecretRef
			require.NotNil(t, ref, where)
			s, ok := b.secrets[ref.Name]
			require.True(t, ok, "%s: Secret %s", where, ref.Name)
			require.True(t, strings.HasPrefix(ref.Name, "troupe-nats-"+user), "%s: %s, as troupe nats-config names it", where, ref.Name)
			got, want := secretValues(s), envFile(t, written[user])
			require.ElementsMatch(t, slices.Collect(maps.Keys(want)), slices.Collect(maps.Keys(got)), where)
			require.Equal(t, user, got["TROUPE_NATS_USER"], where)
			require.Equal(t, bus.InboxPrefix(user), got["TROUPE_NATS_INBOX_PREFIX"], where)
			if name == "real" {
				require.Equal(t, want["TROUPE_NATS_PASSWORD"], got["TROUPE_NATS_PASSWORD"], where)
			}
			for _, e := range c.Env {
				require.False(t, strings.HasPrefix(e.Name, "TROUPE_NATS_"), "%s: %s comes from its Secret", where, e.Name)
			}

			// PostgreSQL: its own role, with its password.
			role := pgroles.Names("")[slices.Index(pgroles.Services, service)]
			dbURL := envVar(c, "TROUPE_DATABASE_URL")
			require.NotNil(t, dbURL, where)
			require.NotEqual(t, "TROUPE_DATABASE_URL", dbURL.ValueFrom.SecretKeyRef.Key, "%s: the owner's URL is the migration's only", where)
			u, err := url.Parse(secretValues(b.secrets[dbURL.ValueFrom.SecretKeyRef.Name])[dbURL.ValueFrom.SecretKeyRef.Key])
			require.NoError(t, err, where)
			require.Equal(t, role.Name, u.User.Username(), where)
			_, hasPassword := u.User.Password()
			require.False(t, hasPassword, "%s: the password comes as PGPASSWORD", where)
			pw := envVar(c, "PGPASSWORD")
			require.NotNil(t, pw, "%s: PGPASSWORD", where)
			require.Equal(t, "TROUPE_DB_PASSWORD_"+strings.ToUpper(service), pw.ValueFrom.SecretKeyRef.Key, where)
		}
		require.Len(t, seen, len(serviceUsers()), name)

		// The migration creates the roles with those passwords.
		job := b.jobs["troupe-migrate"].Spec.Template.Spec.Containers[0]
		require.Equal(t, []string{"migrate", "--roles"}, job.Args)
		require.Empty(t, job.EnvFrom, "the migration uses no NATS")
		for _, service := range pgroles.Services {
			e := envVar(job, "TROUPE_DB_PASSWORD_"+strings.ToUpper(service))
			require.NotNil(t, e, "%s: the migration sets the %s role's password", name, service)
			require.Equal(t, "TROUPE_DB_PASSWORD_"+strings.ToUpper(service), e.ValueFrom.SecretKeyRef.Key)
		}
		owner := envVar(job, "TROUPE_DATABASE_URL")
		u, err := url.Parse(secretValues(b.secrets[owner.ValueFrom.SecretKeyRef.Name])[owner.ValueFrom.SecretKeyRef.Key])
		require.NoError(t, err)
		require.Equal(t, "troupe", u.User.Username(), "%s: the migration runs as the tables' owner", name)
	}
}

// TestNATSValuesRequireUsers: the NATS servers the Helm values make
// include the authorization block troupe nats-config writes, from a
// Secret mounted beside nats.conf, where the include points.
func TestNATSValuesRequireUsers(t *testing.T) {
	t.Parallel()
	var v struct {
		Config struct {
			Merge map[string]any `json:"merge"`
		} `json:"config"`
		Container struct {
			Patch []struct {
				Op, Path string
				Value    corev1.VolumeMount
			} `json:"patch"`
		} `json:"container"`
		PodTemplate struct {
			Patch []struct {
				Op, Path string
				Value    corev1.Volume
			} `json:"patch"`
		} `json:"podTemplate"`
	}
	require.NoError(t, json.Unmarshal(natsValues(t), &v))
	include, ok := v.Config.Merge["00$include"].(string)
	require.True(t, ok, "the users are included")
	require.Len(t, v.Container.Patch, 1)
	mount := v.Container.Patch[0]
	require.Equal(t, "add", mount.Op)
	require.Equal(t, "/volumeMounts/-", mount.Path)
	require.True(t, mount.Value.ReadOnly)
	// The chart's includes are relative to /etc/nats-config.
	require.Equal(t, filepath.Join("/etc/nats-config", filepath.Dir(include)), mount.Value.MountPath)
	require.Len(t, v.PodTemplate.Patch, 1)
	vol := v.PodTemplate.Patch[0]
	require.Equal(t, "add", vol.Op)
	require.Equal(t, "/spec/volumes/-", vol.Path)
	require.Equal(t, mount.Value.Name, vol.Value.Name)
	require.NotNil(t, vol.Value.Secret)
	require.Equal(t, "nats-troupe-auth", vol.Value.Secret.SecretName)
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	require.True(t, strings.Contains(string(readme), "kubectl -n nats create secret generic nats-troupe-auth --from-file=troupe-auth.conf="),
		"the README makes the Secret, with the file name the include names")
	require.Equal(t, "troupe-auth.conf", filepath.Base(include))
}

// TestDatabaseOwnerMayCreateRoles: the migration Job runs troupe migrate
// --roles as the database's owner, which CloudNativePG makes without
// CREATEROLE; the Cluster's managed roles give it that, and nothing else
// of the owner changes (no password Secret: the operator keeps its own).
func TestDatabaseOwnerMayCreateRoles(t *testing.T) {
	type managedRole struct {
		Name           string         `json:"name"`
		Ensure         string         `json:"ensure"`
		Login          bool           `json:"login"`
		CreateRole     bool           `json:"createrole"`
		PasswordSecret map[string]any `json:"passwordSecret"`
	}
	t.Parallel()
	var cluster struct {
		Spec struct {
			Bootstrap struct {
				InitDB struct {
					Owner string `json:"owner"`
				} `json:"initdb"`
			} `json:"bootstrap"`
			Managed struct {
				Roles []managedRole `json:"roles"`
			} `json:"managed"`
		} `json:"spec"`
	}
	objs := manifestFiles(t)["postgres/cluster.yaml"]
	i := slices.IndexFunc(objs, func(o object) bool { return o.Kind == "Cluster" })
	require.GreaterOrEqual(t, i, 0)
	require.NoError(t, json.Unmarshal(objs[i].JSON, &cluster))
	owner := cluster.Spec.Bootstrap.InitDB.Owner
	require.NotEmpty(t, owner)
	j := slices.IndexFunc(cluster.Spec.Managed.Roles, func(r managedRole) bool { return r.Name == owner })
	require.GreaterOrEqual(t, j, 0, "the owner %s is a managed role", owner)
	r := cluster.Spec.Managed.Roles[j]
	require.True(t, r.CreateRole)
	require.True(t, r.Login)
	require.Equal(t, "present", r.Ensure)
	require.Nil(t, r.PasswordSecret, "the operator keeps the owner's password (troupe-db-app)")
}
