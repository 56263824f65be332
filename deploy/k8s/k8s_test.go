// Package k8s_test checks the Kubernetes manifests in deploy/k8s: they
// build with kustomize, every object is valid against the Kubernetes API
// types or its CRD's schema (strictly: an unknown field fails), and they
// agree with the troupe binary (commands, flags, probe paths and ports,
// roles, consumers), with the configuration loader, and with each other.
// Nothing runs in a cluster here, and nothing is downloaded.
package k8s_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/config"
	"github.com/troupe-dev/troupe/review"
	"github.com/troupe-dev/troupe/schemas"
)

// The image: deploy/Dockerfile puts the binary at /troupe as the
// entrypoint and runs as the user "nonroot" (65532 in distroless).
const entrypoint = "/troupe"

// TestKustomizeBuildsAreValid: the base, the example overlay and the base
// with the HPA component build, and every object in them is valid, strictly.
func TestKustomizeBuildsAreValid(t *testing.T) {
	t.Parallel()
	builds := allBuilds(t)
	for _, name := range []string{buildBase, buildOverlay, buildHPA} {
		b := decodeBuild(t, name, builds[name])
		require.Equal(t, 1, b.kinds["Namespace"], name)
		require.Contains(t, b.namespaces, "troupe", name)
		require.Len(t, b.jobs, 1, name)
		require.Len(t, b.deployments, 2+len(schemas.Roles), name)
		require.Equal(t, 1, b.kinds["ConfigMap"], name)
		require.Equal(t, 1+len(serviceUsers()), b.kinds["Secret"], "%s: troupe-secrets and a NATS user's for each service", name)
		require.Equal(t, 1, b.kinds["ServiceMonitor"], name)
		require.NotEmpty(t, b.netpols, name)
		require.Len(t, b.pdbs, len(b.deployments), name)
		if name == buildHPA {
			require.Empty(t, b.scaledObjects, name)
			require.Len(t, b.hpas, len(schemas.Roles), name)
		} else {
			require.Len(t, b.scaledObjects, len(schemas.Roles), name)
			require.Empty(t, b.hpas, "%s: the HPA component is not in the default build", name)
		}
		// Every object is namespaced into troupe (but the Namespace).
		for _, o := range builds[name] {
			var m struct {
				Metadata metav1.ObjectMeta `json:"metadata"`
			}
			require.NoError(t, json.Unmarshal(o.JSON, &m))
			if o.Kind != "Namespace" {
				require.Equal(t, "troupe", m.Metadata.Namespace, o.String())
			}
		}
	}
	raw, err := os.ReadFile("base/kustomization.yaml")
	require.NoError(t, err)
	require.NotContains(t, string(raw), "components", "the HPA component must stay out of the default build")
}

// TestManifestFilesAreValid: every YAML file under deploy/k8s that is a
// Kubernetes manifest is valid, strictly, on its own: the base's files,
// the HPA component's, and the PostgreSQL ones no kustomization builds.
func TestManifestFilesAreValid(t *testing.T) {
	t.Parallel()
	crds := loadCRDs(t)
	files := manifestFiles(t)
	kinds := map[string]bool{}
	for path, objs := range files {
		for _, o := range objs {
			_, err := validate(crds, o)
			require.NoError(t, err, path)
			kinds[o.Kind] = true
		}
	}
	for _, want := range []string{
		"base/orchestrator.yaml", "base/review.yaml", "base/migrate-job.yaml", "base/networkpolicy.yaml",
		"base/servicemonitor.yaml", "base/namespace.yaml", "components/hpa/hpa.yaml",
		"postgres/cluster.yaml", "postgres/restore.yaml", "postgres/s3-credentials.yaml",
	} {
		require.Contains(t, files, want)
	}
	for _, r := range schemas.Roles {
		require.Contains(t, files, "base/workers/"+r+".yaml")
	}
	for _, k := range []string{"Deployment", "Job", "Service", "PodDisruptionBudget", "NetworkPolicy",
		"HorizontalPodAutoscaler", "ServiceMonitor", "ScaledObject", "Cluster", "ScheduledBackup", "Secret"} {
		require.True(t, kinds[k], "no %s checked", k)
	}
	// Helm values are not a manifest, and patches are checked in the
	// builds that apply them.
	require.NotContains(t, files, "nats/values.yaml")
	require.NotContains(t, files, "overlays/example/developer.yaml")
}

// TestStrictValidationRejectsUnknownFields: the checks above would catch
// a misspelt field, in a built-in kind and in a custom resource, which a
// lenient decoder (or the API server, pruning it) would drop silently.
func TestStrictValidationRejectsUnknownFields(t *testing.T) {
	t.Parallel()
	crds := loadCRDs(t)
	base := allBuilds(t)[buildBase]
	find := func(objs []object, kind, name string) object {
		for _, o := range objs {
			if o.Kind == kind && o.Name == name {
				return o
			}
		}
		t.Fatalf("no %s %s", kind, name)
		return object{}
	}
	cluster := find(manifestFiles(t)["postgres/cluster.yaml"], "Cluster", "troupe-db")

	cases := []struct {
		name   string
		obj    object
		change func(m map[string]any)
		want   string
	}{
		{"Deployment: a misspelt probe field", find(base, "Deployment", "worker-pm"), func(m map[string]any) {
			container(m)["livenessProbe"].(map[string]any)["httpGet"].(map[string]any)["paht"] = "/healthz"
		}, `unknown field "spec.template.spec.containers[0].livenessProbe.httpGet.paht"`},
		{"Deployment: a field spec does not have", find(base, "Deployment", "worker-pm"), func(m map[string]any) {
			m["spec"].(map[string]any)["replica"] = 2
		}, `unknown field "spec.replica"`},
		{"Deployment: a field with the wrong case", find(base, "Deployment", "review"), func(m map[string]any) {
			c := container(m)
			c["ReadinessProbe"] = c["readinessProbe"]
			delete(c, "readinessProbe")
		}, `unknown field "spec.template.spec.containers[0].ReadinessProbe"`},
		{"ScaledObject: a field spec does not have", find(base, "ScaledObject", "worker-pm"), func(m map[string]any) {
			m["spec"].(map[string]any)["minReplicas"] = 1
		}, "minReplicas"},
		{"ScaledObject: a misspelt trigger field", find(base, "ScaledObject", "worker-pm"), func(m map[string]any) {
			tr := m["spec"].(map[string]any)["triggers"].([]any)[0].(map[string]any)
			tr["metdata"] = tr["metadata"]
		}, "metdata"},
		{"ScaledObject: a wrong type", find(base, "ScaledObject", "worker-pm"), func(m map[string]any) {
			m["spec"].(map[string]any)["minReplicaCount"] = "one"
		}, "minReplicaCount"},
		{"ScaledObject: a misspelt nats-jetstream setting", find(base, "ScaledObject", "worker-pm"), func(m map[string]any) {
			md := m["spec"].(map[string]any)["triggers"].([]any)[0].(map[string]any)["metadata"].(map[string]any)
			md["lagTreshold"] = md["lagThreshold"]
			delete(md, "lagThreshold")
		}, "metadata.lagTreshold: not a nats-jetstream setting"},
		{"ScaledObject: an unknown metadata field", find(base, "ScaledObject", "worker-pm"), func(m map[string]any) {
			m["metadata"].(map[string]any)["labelz"] = map[string]any{"a": "b"}
		}, "labelz"},
		{"ServiceMonitor: a misspelt endpoint field", find(base, "ServiceMonitor", "troupe"), func(m map[string]any) {
			m["spec"].(map[string]any)["endpoints"].([]any)[0].(map[string]any)["pth"] = "/metrics"
		}, "pth"},
		{"Cluster: a misspelt bootstrap field", cluster, func(m map[string]any) {
			m["spec"].(map[string]any)["bootstrap"].(map[string]any)["initdb"].(map[string]any)["databse"] = "troupe"
		}, "databse"},
		{"an unknown kind", find(base, "Deployment", "worker-pm"), func(m map[string]any) {
			m["apiVersion"], m["kind"] = "example.com/v1", "Widget"
		}, "Widget"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := validate(crds, c.obj)
			require.NoError(t, err, "the object as built is valid")
			var m map[string]any
			require.NoError(t, json.Unmarshal(c.obj.JSON, &m))
			c.change(m)
			changed := c.obj
			var err2 error
			changed.JSON, err2 = json.Marshal(m)
			require.NoError(t, err2)
			_, err = validate(crds, changed)
			require.Error(t, err)
			require.Contains(t, err.Error(), c.want)
			t.Log(err)
		})
	}
	t.Run("duplicate keys", func(t *testing.T) {
		_, err := newObject("test", []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {x: '1'}\ndata: {y: '2'}\n"))
		require.Error(t, err)
	})
}

func container(m map[string]any) map[string]any {
	return m["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
}

// serviceCommands are the troupe commands a workload may run.
var serviceCommands = map[string]string{"orchestrator": "Deployment", "review": "Deployment", "worker": "Deployment", "migrate": "Job"}

// TestWorkloadsAgreeWithTheBinary: every container runs a troupe command
// with flags the binary has; its probes ask /healthz (liveness) and
// /readyz (readiness) on the port its --ops-addr names; review's dashboard
// port is its --http; the pod gets longer than --grace to stop; and there
// is one worker Deployment per role, each with a ScaledObject on its
// role's consumer whose threshold is the worker's concurrency.
func TestWorkloadsAgreeWithTheBinary(t *testing.T) {
	t.Parallel()
	bin := troupeBinary(t)
	builds := allBuilds(t)
	monitorPort := natsMonitorPort(t)
	help := map[string]string{}
	for _, name := range []string{buildBase, buildOverlay} {
		b := decodeBuild(t, name, builds[name])
		cfg, _ := buildConfig(t, b)
		workers := map[string]string{}
		for _, w := range b.workloads() {
			where := name + ": " + w.kind + " " + w.name
			require.Len(t, w.spec.Containers, 1, where)
			c := w.spec.Containers[0]
			require.Equal(t, []string{entrypoint}, c.Command, where)
			require.NotEmpty(t, c.Args, where)
			sub := c.Args[0]
			require.Equal(t, serviceCommands[sub], w.kind, "%s: troupe %s", where, sub)

			// The binary has the command and every flag given to it.
			if _, ok := help[sub]; !ok {
				out, err := exec.Command(bin, sub, "--help").CombinedOutput()
				require.NoError(t, err, "troupe %s --help\n%s", sub, out)
				help[sub] = string(out)
			}
			for _, a := range c.Args[1:] {
				if f, ok := strings.CutPrefix(a, "--"); ok {
					f, _, _ = strings.Cut(f, "=")
					require.Regexp(t, "(?m)^  -"+regexp.QuoteMeta(f)+"( |$)", help[sub], "%s: troupe %s has no flag --%s", where, sub, f)
				}
			}
			if w.kind != "Deployment" {
				require.Nil(t, c.LivenessProbe, where)
				continue
			}

			// Probes on the ops port, at the paths the binary serves.
			ops, ok := flagValue(c.Args, "ops-addr")
			require.True(t, ok, "%s: --ops-addr", where)
			_, opsPort, err := net.SplitHostPort(ops)
			require.NoError(t, err)
			require.Equal(t, opsPort, strconv.Itoa(int(namedPort(t, c, "ops"))), "%s: the ops port is --ops-addr's", where)
			require.NotNil(t, c.LivenessProbe, where)
			require.NotNil(t, c.ReadinessProbe, where)
			for probe, want := range map[*corev1.Probe]string{c.LivenessProbe: "/healthz", c.ReadinessProbe: "/readyz"} {
				require.NotNil(t, probe.HTTPGet, where)
				require.Equal(t, want, probe.HTTPGet.Path, where)
				require.Equal(t, opsPort, strconv.Itoa(int(resolvePort(t, c, probe.HTTPGet.Port))), "%s: probe port", where)
			}
			// The kubelet waits terminationGracePeriodSeconds before
			// SIGKILL: the process needs its --grace and then some to drain.
			require.NotNil(t, w.spec.TerminationGracePeriodSeconds, where)
			g := grace(t, c.Args)
			require.GreaterOrEqual(t, time.Duration(*w.spec.TerminationGracePeriodSeconds)*time.Second, g+10*time.Second,
				"%s: terminationGracePeriodSeconds must exceed --grace %s", where, g)

			switch sub {
			case "review":
				require.Equal(t, "review", w.name)
				httpAddr, ok := flagValue(c.Args, "http")
				require.True(t, ok, "%s: --http", where)
				_, httpPort, err := net.SplitHostPort(httpAddr)
				require.NoError(t, err)
				require.Equal(t, "8080", httpPort, where)
				require.Equal(t, int32(8080), namedPort(t, c, "http"), "%s: the dashboard port is --http's", where)
				tok := envVar(c, "TROUPE_DASHBOARD_TOKEN")
				require.NotNil(t, tok, "%s: the dashboard needs TROUPE_DASHBOARD_TOKEN beyond loopback", where)
				require.NotNil(t, tok.ValueFrom, where)
				require.NotNil(t, tok.ValueFrom.SecretKeyRef, "%s: the token comes from the Secret", where)
			case "orchestrator":
				require.Equal(t, "orchestrator", w.name)
			case "worker":
				role, ok := flagValue(c.Args, "role")
				require.True(t, ok, "%s: --role", where)
				require.Contains(t, schemas.Roles, role, "%s: --role %s is not a role", where, role)
				require.Equal(t, "worker-"+role, w.name)
				require.NotContains(t, workers, role, "%s: a second Deployment for %s", where, role)
				// KEDA owns the replica count: a replicas field would reset
				// it on every apply.
				require.Nil(t, w.replicas, "%s: leave replicas to the autoscaler", where)
				workers[role] = w.name
			}
		}
		require.Len(t, workers, len(schemas.Roles), name)

		// One ScaledObject per role, on that role's consumer.
		for _, role := range schemas.Roles {
			so, ok := b.scaledObjects["worker-"+role]
			require.True(t, ok, "%s: no ScaledObject for %s", name, role)
			where := name + ": ScaledObject " + so.Metadata.Name
			require.Equal(t, workers[role], so.Spec.ScaleTargetRef.Name, where)
			require.Contains(t, []string{"", "Deployment"}, so.Spec.ScaleTargetRef.Kind, where)
			require.NotNil(t, so.Spec.MinReplicaCount, where)
			require.NotNil(t, so.Spec.MaxReplicaCount, where)
			require.GreaterOrEqual(t, *so.Spec.MinReplicaCount, int32(1), "%s: a worker stays up for the dashboard and to pick tasks at once", where)
			require.Greater(t, *so.Spec.MaxReplicaCount, *so.Spec.MinReplicaCount, where)
			require.Len(t, so.Spec.Triggers, 1, where)
			tr := so.Spec.Triggers[0]
			require.Equal(t, "nats-jetstream", tr.Type, where)
			require.Equal(t, bus.StreamTasks, tr.Metadata["stream"], where)
			require.Equal(t, bus.WorkerConsumer(role), tr.Metadata["consumer"], where)
			require.Equal(t, "$G", tr.Metadata["account"], "%s: NATS without accounts: the global account", where)
			host, port, err := net.SplitHostPort(tr.Metadata["natsServerMonitoringEndpoint"])
			require.NoError(t, err, where)
			require.Equal(t, monitorPort, port, "%s: the NATS chart's monitor port", where)
			require.True(t, strings.HasPrefix(host, "nats-headless."), "%s: KEDA finds a cluster's consumer leader as <pod>.<endpoint>: use the headless Service", where)
			// KEDA's lag is pending plus in-flight messages, and a worker
			// runs concurrency tasks at once: one worker per concurrency.
			d := b.deployments[workers[role]]
			want := cfg.Roles[role].Concurrency
			if v, ok := flagValue(d.Spec.Template.Spec.Containers[0].Args, "concurrency"); ok {
				want, err = strconv.Atoi(v)
				require.NoError(t, err)
			}
			require.Equal(t, strconv.Itoa(want), tr.Metadata["lagThreshold"], "%s: lagThreshold is the worker's concurrency", where)
		}
		require.Len(t, b.scaledObjects, len(schemas.Roles), name)
		require.Equal(t, []string{"migrate", "--roles"}, b.jobs["troupe-migrate"].Spec.Template.Spec.Containers[0].Args, name)
	}

	// The image the manifests assume.
	docker, err := os.ReadFile("../Dockerfile")
	require.NoError(t, err)
	require.Contains(t, string(docker), `ENTRYPOINT ["`+entrypoint+`"]`)
	require.Contains(t, string(docker), "USER nonroot:nonroot", "the pods set runAsUser 65532 for this user")
}

// TestServicesRunAsDeployed runs each container's command from the builds
// with the build's configuration file and environment (NATS and the store
// unreachable, on loopback): it starts, serves the probe paths and
// /metrics on its ops address (alive, not ready), and stops on SIGTERM well
// within terminationGracePeriodSeconds. The migration Job migrates. With
// the placeholder Secret's empty token, review refuses to serve the
// dashboard beyond loopback.
func TestServicesRunAsDeployed(t *testing.T) {
	t.Parallel()
	bin := troupeBinary(t)
	builds := allBuilds(t)
	type run struct {
		build string
		b     *typed
		w     workload
	}
	var runs []run
	seen := map[string]bool{}
	for _, name := range []string{buildBase, buildOverlay} {
		b := decodeBuild(t, name, builds[name])
		for _, w := range b.workloads() {
			key := strings.Join(w.spec.Containers[0].Args, " ")
			if !seen[key] {
				seen[key] = true
				runs = append(runs, run{name, b, w})
			}
		}
	}
	smPath := serviceMonitorPath(t, decodeBuild(t, buildBase, builds[buildBase]))
	for _, r := range runs {
		t.Run(r.build+"/"+r.w.name, func(t *testing.T) {
			t.Parallel()
			c := r.w.spec.Containers[0]
			env := containerEnv(t, r.b, r.w.spec, c)
			// Keep every connection on this machine.
			env["TROUPE_DATABASE_URL"] = filepath.Join(t.TempDir(), "troupe.db")
			env["TROUPE_NATS_URL"] = "nats://" + closedAddr(t)
			if r.w.kind == "Job" {
				ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
				defer cancel()
				out, err := runEnv(ctx, bin, c.Args, env).CombinedOutput()
				require.NoError(t, err, "%s\n%s", c.Args, out)
				require.Contains(t, string(out), "is migrated")
				return
			}
			args := withFlag(c.Args, "ops-addr", "127.0.0.1:0")
			if h, ok := flagValue(args, "http"); ok {
				host, _, err := net.SplitHostPort(h)
				require.NoError(t, err)
				args = withFlag(args, "http", net.JoinHostPort(host, "0"))
				// The placeholder Secret has no token: the dashboard is not
				// served beyond loopback without one, and review exits.
				require.Empty(t, env["TROUPE_DASHBOARD_TOKEN"])
				ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
				defer cancel()
				out, err := runEnv(ctx, bin, args, env).CombinedOutput()
				require.Error(t, err, "review served the dashboard on %s without a token", host)
				require.Contains(t, string(out), "TROUPE_DASHBOARD_TOKEN")
				env["TROUPE_DASHBOARD_TOKEN"] = "a-token-for-this-test"
			}
			// Killed, if still running, when the test ends.
			cmd := runEnv(t.Context(), bin, args, env)
			stderr, err := cmd.StderrPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			exited := make(chan error, 1)
			addr := make(chan string, 1)
			var logMu sync.Mutex
			var logs strings.Builder
			go func() {
				sc := bufio.NewScanner(stderr)
				for sc.Scan() {
					logMu.Lock()
					logs.WriteString(sc.Text() + "\n")
					logMu.Unlock()
					var line struct{ Addr, Message string }
					if json.Unmarshal(sc.Bytes(), &line) == nil && strings.HasPrefix(line.Message, "ops endpoint listening") {
						select {
						case addr <- line.Addr:
						default:
						}
					}
				}
				exited <- cmd.Wait()
			}()
			var ops string
			select {
			case ops = <-addr:
			case err := <-exited:
				logMu.Lock()
				defer logMu.Unlock()
				t.Fatalf("%s exited: %v\n%s", args, err, logs.String())
			case <-time.After(30 * time.Second):
				t.Fatalf("%s: no ops endpoint", args)
			}
			get := func(path string) int {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ops+path, nil)
				require.NoError(t, err)
				resp, err := http.DefaultClient.Do(req)
				require.NoError(t, err)
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				return resp.StatusCode
			}
			require.Equal(t, http.StatusOK, get(c.LivenessProbe.HTTPGet.Path), "alive")
			require.Equal(t, http.StatusServiceUnavailable, get(c.ReadinessProbe.HTTPGet.Path), "not ready without NATS")
			require.Equal(t, http.StatusOK, get(smPath), "the ServiceMonitor's path")

			start := time.Now()
			require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
			limit := time.Duration(*r.w.spec.TerminationGracePeriodSeconds) * time.Second
			select {
			case <-exited:
				require.Less(t, time.Since(start), limit)
			case <-time.After(min(limit, 20*time.Second)):
				t.Fatalf("%s did not stop on SIGTERM", args)
			}
		})
	}
}

// TestSecretsStayOutOfTheConfigMap: the configuration file holds no
// secret (keys are ${VAR} references), parses and validates with the real
// loader, and every ${VAR} it names reaches each container that reads it;
// every Secret a workload refers to exists in the build with that key; the
// Secrets in git hold placeholders only.
func TestSecretsStayOutOfTheConfigMap(t *testing.T) {
	t.Parallel()
	builds := allBuilds(t)
	for _, name := range []string{buildBase, buildOverlay, buildHPA} {
		b := decodeBuild(t, name, builds[name])
		for cmName, cm := range b.configMaps {
			for key, v := range cm.Data {
				require.Empty(t, configSecretProblems(key, v), "%s: ConfigMap %s", name, cmName)
			}
			require.Empty(t, cm.BinaryData, name)
		}
		cfg, raw := buildConfig(t, b)
		require.Empty(t, cfg.Database.URL, "%s: the database URL has a password: it comes from the Secret", name)
		refs := envRefs(raw)
		require.Contains(t, refs, "DASHSCOPE_API_KEY", name)

		for _, w := range b.workloads() {
			for _, c := range w.spec.Containers {
				where := name + ": " + w.kind + " " + w.name
				for _, ef := range c.EnvFrom {
					if ef.SecretRef != nil {
						require.Contains(t, b.secrets, ef.SecretRef.Name, "%s: envFrom a Secret not in the build", where)
					}
					require.Nil(t, ef.ConfigMapRef, "%s: configuration comes from troupe.json", where)
				}
				for _, e := range c.Env {
					if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
						ref := e.ValueFrom.SecretKeyRef
						s, ok := b.secrets[ref.Name]
						require.True(t, ok, "%s: %s refers to Secret %s, not in the build", where, e.Name, ref.Name)
						require.Contains(t, secretValues(s), ref.Key, "%s: %s: Secret %s has no key %s", where, e.Name, ref.Name, ref.Key)
					}
					// A literal value is never a secret.
					require.Empty(t, configSecretProblems(e.Name, e.Value), where)
					if e.Name == "TROUPE_DATABASE_URL" || e.Name == "PGPASSWORD" || strings.HasPrefix(e.Name, "TROUPE_DASHBOARD_") || strings.HasPrefix(e.Name, "TROUPE_DB_PASSWORD_") {
						require.NotNil(t, e.ValueFrom, "%s: %s must come from the Secret", where, e.Name)
					}
				}
				for _, v := range w.spec.Volumes {
					if v.Secret != nil {
						require.Contains(t, b.secrets, v.Secret.SecretName, where)
					}
				}
				// Whoever reads troupe.json gets every variable it names,
				// or the loader refuses to start ("environment variable ...
				// is not set").
				if envVar(c, "TROUPE_CONFIG") != nil {
					env := containerEnv(t, b, w.spec, c)
					for _, ref := range refs {
						require.Contains(t, env, ref, "%s: troupe.json needs ${%s}", where, ref)
					}
				}
			}
		}
		for sName, s := range b.secrets {
			requirePlaceholders(t, name+": Secret "+sName, secretValues(s))
		}
	}
	for _, o := range manifestFiles(t)["postgres/s3-credentials.yaml"] {
		var s corev1.Secret
		require.NoError(t, json.Unmarshal(o.JSON, &s))
		requirePlaceholders(t, o.String(), secretValues(&s))
	}

	// The check would see a secret put in the file.
	raw, err := os.ReadFile("base/troupe.json")
	require.NoError(t, err)
	leaked := strings.Replace(string(raw), "${DASHSCOPE_API_KEY}", "sk-8f2a9c4e7b1d3f5a6c8e0b2d4f6a8c0e", 1)
	require.NotEmpty(t, configSecretProblems("troupe.json", leaked))
	leaked = strings.Replace(string(raw), "nats://nats.", "nats://troupe:hunter2@nats.", 1)
	require.NotEmpty(t, configSecretProblems("troupe.json", leaked))
	require.Empty(t, configSecretProblems("troupe.json", string(raw)))
}

// requirePlaceholders: a Secret committed to git holds nothing real: every
// value named like a secret, or a URL with a password, is a placeholder
// (a user's name, a URL without a password are not secrets).
func requirePlaceholders(t *testing.T, where string, values map[string]string) {
	t.Helper()
	for k, v := range values {
		if v != "" && (secretName.MatchString(k) || len(configSecretProblems(k, v)) > 0) {
			require.Contains(t, v, "change-me", "%s: %s is not a placeholder", where, k)
		}
	}
}

var (
	envRef     = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)
	secretName = regexp.MustCompile(`(?i)(api[_-]?key|password|passwd|token|secret|credential)`)
)

func envRefs(s string) []string {
	var out []string
	for _, m := range envRef.FindAllStringSubmatch(s, -1) {
		if !slices.Contains(out, m[1]) {
			out = append(out, m[1])
		}
	}
	return out
}

// configSecretProblems says what in a value kept in a ConfigMap (or a
// literal env value) looks like a secret: what review's secret scanner
// finds (it would refuse to promote an output with it), a field named like
// a secret whose value is not a ${VAR} reference, or a URL with a password.
func configSecretProblems(name, value string) []string {
	var out []string
	for _, c := range review.CheckRules("devops", value, nil, review.Limits{}) {
		if c.Name == review.CheckNoSecrets && !c.Passed {
			out = append(out, name+": "+c.Detail)
		}
	}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				walk(path+"."+k, x)
			}
		case []any:
			for i, x := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), x)
			}
		case string:
			last := path[strings.LastIndex(path, ".")+1:]
			if secretName.MatchString(last) && v != "" && !envRef.MatchString(v) {
				out = append(out, path+": a secret in the configuration; use ${VAR}")
			}
			if u, err := url.Parse(v); err == nil && u.User != nil {
				if _, has := u.User.Password(); has && !envRef.MatchString(u.User.String()) {
					out = append(out, path+": a URL with a password")
				}
			}
		}
	}
	var doc any
	if json.Unmarshal([]byte(value), &doc) == nil {
		walk(name, doc)
	} else {
		walk(name, value)
	}
	return out
}

// TestSecurityAndResources: every pod runs as a non-root user the kubelet
// can verify, with no privilege, a read-only root, no capabilities, the
// runtime's seccomp profile and no service account token; every container
// has requests and limits and a pinned image pulled only when missing.
func TestSecurityAndResources(t *testing.T) {
	t.Parallel()
	builds := allBuilds(t)
	for _, name := range []string{buildBase, buildOverlay} {
		b := decodeBuild(t, name, builds[name])
		for _, w := range b.workloads() {
			where := name + ": " + w.kind + " " + w.name
			require.Equal(t, "troupe", w.spec.ServiceAccountName, where)
			require.NotNil(t, w.spec.AutomountServiceAccountToken, where)
			require.False(t, *w.spec.AutomountServiceAccountToken, "%s: troupe never calls the Kubernetes API", where)
			require.False(t, w.spec.HostNetwork || w.spec.HostPID || w.spec.HostIPC, where)
			psc := w.spec.SecurityContext
			if psc == nil {
				psc = &corev1.PodSecurityContext{}
			}
			for _, c := range append(slices.Clone(w.spec.InitContainers), w.spec.Containers...) {
				where := where + " container " + c.Name
				sc := c.SecurityContext
				require.NotNil(t, sc, where)
				nonRoot := sc.RunAsNonRoot
				if nonRoot == nil {
					nonRoot = psc.RunAsNonRoot
				}
				require.True(t, nonRoot != nil && *nonRoot, "%s: runAsNonRoot", where)
				// The image's USER is a name: the kubelet refuses to start
				// a runAsNonRoot container unless runAsUser is a number.
				user := sc.RunAsUser
				if user == nil {
					user = psc.RunAsUser
				}
				require.True(t, user != nil && *user != 0, "%s: runAsUser", where)
				require.True(t, sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem, "%s: readOnlyRootFilesystem", where)
				require.True(t, sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation, "%s: allowPrivilegeEscalation", where)
				require.True(t, sc.Privileged == nil || !*sc.Privileged, where)
				require.NotNil(t, sc.Capabilities, where)
				require.Contains(t, sc.Capabilities.Drop, corev1.Capability("ALL"), where)
				require.Empty(t, sc.Capabilities.Add, where)
				seccomp := sc.SeccompProfile
				if seccomp == nil {
					seccomp = psc.SeccompProfile
				}
				require.NotNil(t, seccomp, where)
				require.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, seccomp.Type, where)

				for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					req, ok := c.Resources.Requests[res]
					require.True(t, ok, "%s: requests.%s", where, res)
					lim, ok := c.Resources.Limits[res]
					require.True(t, ok, "%s: limits.%s", where, res)
					require.LessOrEqual(t, req.Cmp(lim), 0, "%s: %s request above its limit", where, res)
				}
				require.Equal(t, corev1.PullIfNotPresent, c.ImagePullPolicy, where)
				_, tag, ok := strings.Cut(c.Image[strings.LastIndex(c.Image, "/")+1:], ":")
				require.True(t, ok && tag != "" && tag != "latest", "%s: pin the image tag (%s)", where, c.Image)
			}
		}
		ns := b.namespaces["troupe"]
		require.Equal(t, "restricted", ns.Labels["pod-security.kubernetes.io/enforce"], name)
	}
	overlay := decodeBuild(t, buildOverlay, builds[buildOverlay])
	for _, w := range overlay.workloads() {
		require.Equal(t, "registry.example.com/troupe:0.1.0", w.spec.Containers[0].Image, "the overlay pins the image")
	}
}

// TestDisruptionBudgetsServicesAndMonitoring: each Deployment has exactly
// one PodDisruptionBudget that a drain can satisfy; every Service selects
// pods and names ports they have; the ServiceMonitor scrapes the ops port
// of every Troupe Service.
func TestDisruptionBudgetsServicesAndMonitoring(t *testing.T) {
	t.Parallel()
	builds := allBuilds(t)
	for _, name := range []string{buildBase, buildOverlay, buildHPA} {
		b := decodeBuild(t, name, builds[name])
		for _, d := range b.deployments {
			var budgets []string
			for _, p := range b.pdbs {
				if selects(t, p.Spec.Selector, d.Spec.Template.Labels) {
					budgets = append(budgets, p.Name)
					if p.Spec.MinAvailable != nil {
						require.NotNil(t, d.Spec.Replicas, "%s: %s has minAvailable but an autoscaled count", name, p.Name)
						require.Less(t, p.Spec.MinAvailable.IntValue(), int(*d.Spec.Replicas), "%s: %s would block every drain", name, p.Name)
					} else {
						require.NotNil(t, p.Spec.MaxUnavailable, name)
					}
				}
			}
			require.Len(t, budgets, 1, "%s: Deployment %s: budgets %v", name, d.Name, budgets)
			require.True(t, selects(t, d.Spec.Selector, d.Spec.Template.Labels), "%s: %s selects its own pods", name, d.Name)
			// No Deployment's selector takes another's pods.
			for _, other := range b.deployments {
				if other.Name != d.Name {
					require.False(t, selects(t, d.Spec.Selector, other.Spec.Template.Labels), "%s: %s selects %s's pods", name, d.Name, other.Name)
				}
			}
		}

		var sm struct {
			Spec struct {
				Selector  metav1.LabelSelector `json:"selector"`
				Endpoints []struct {
					Port string `json:"port"`
					Path string `json:"path"`
				} `json:"endpoints"`
			} `json:"spec"`
		}
		for _, o := range builds[name] {
			if o.Kind == "ServiceMonitor" {
				require.NoError(t, json.Unmarshal(o.JSON, &sm))
			}
		}
		require.Len(t, sm.Spec.Endpoints, 1, name)
		for _, s := range b.services {
			where := name + ": Service " + s.Name
			var pods []workload
			for _, w := range b.workloads() {
				if w.kind == "Deployment" && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(w.labels)) {
					pods = append(pods, w)
				}
			}
			require.Len(t, pods, 1, "%s selects one Deployment's pods", where)
			c := pods[0].spec.Containers[0]
			for _, p := range s.Spec.Ports {
				require.Equal(t, p.Port, resolvePort(t, c, p.TargetPort), "%s: port %s", where, p.Name)
			}
			require.True(t, selects(t, &sm.Spec.Selector, s.Labels), "%s: not scraped", where)
			var ops bool
			for _, p := range s.Spec.Ports {
				if p.Name == sm.Spec.Endpoints[0].Port {
					ops = true
					opsAddr, _ := flagValue(c.Args, "ops-addr")
					require.True(t, strings.HasSuffix(opsAddr, ":"+strconv.Itoa(int(resolvePort(t, c, p.TargetPort)))), "%s: metrics are on --ops-addr", where)
				}
			}
			require.True(t, ops, "%s: no port %q for the ServiceMonitor", where, sm.Spec.Endpoints[0].Port)
		}
		require.Equal(t, "/metrics", sm.Spec.Endpoints[0].Path, name)
		require.Contains(t, b.services, "review", name)
		require.Len(t, b.services, 2+len(schemas.Roles), name)
	}
}

// TestNetworkPolicies: every Troupe pod is isolated both ways; what is
// let out is DNS, NATS, PostgreSQL (and HTTPS to public model APIs), on
// the ports troupe.json, the NATS values and the database URL use; what is
// let in is the dashboard and, from the monitoring namespace, the ops port.
func TestNetworkPolicies(t *testing.T) {
	t.Parallel()
	builds := allBuilds(t)
	for _, name := range []string{buildBase, buildOverlay} {
		b := decodeBuild(t, name, builds[name])
		cfg, _ := buildConfig(t, b)
		natsURL, err := url.Parse(cfg.NATS.URL)
		require.NoError(t, err)
		dbURL, err := url.Parse(secretValues(b.secrets[secretRefName(t, b)])["TROUPE_DATABASE_URL"])
		require.NoError(t, err)

		for _, w := range b.workloads() {
			where := name + ": " + w.kind + " " + w.name
			ingress, egress := map[string]bool{}, map[string]bool{}
			var isolatedIn, isolatedOut bool
			for _, np := range b.netpols {
				if !selects(t, &np.Spec.PodSelector, w.labels) {
					continue
				}
				for _, pt := range np.Spec.PolicyTypes {
					isolatedIn = isolatedIn || pt == "Ingress"
					isolatedOut = isolatedOut || pt == "Egress"
				}
				for _, r := range np.Spec.Ingress {
					for _, p := range r.Ports {
						ingress[portKey(p)] = true
					}
				}
				for _, r := range np.Spec.Egress {
					require.NotEmpty(t, r.To, "%s: %s: an egress rule to anywhere", where, np.Name)
					require.NotEmpty(t, r.Ports, "%s: %s: an egress rule on every port", where, np.Name)
					for _, p := range r.Ports {
						egress[portKey(p)] = true
					}
				}
			}
			require.True(t, isolatedIn && isolatedOut, "%s: not isolated", where)
			for k := range egress {
				require.Contains(t, []string{"UDP/53", "TCP/53", "TCP/" + natsURL.Port(), "TCP/" + dbURL.Port(), "TCP/443"}, k, where)
			}
			require.True(t, egress["UDP/53"], "%s: DNS", where)
			if w.kind == "Job" {
				require.Equal(t, map[string]bool{"UDP/53": true, "TCP/53": true, "TCP/" + natsURL.Port(): true, "TCP/" + dbURL.Port(): true}, egress, where)
				continue
			}
			require.True(t, egress["TCP/"+natsURL.Port()], "%s: NATS", where)
			require.True(t, egress["TCP/"+dbURL.Port()], "%s: PostgreSQL", where)
			require.True(t, egress["TCP/443"], "%s: model APIs", where)
			require.True(t, ingress["TCP/9090"], "%s: Prometheus", where)
			if w.name == "review" {
				require.True(t, ingress["TCP/8080"], "%s: the dashboard", where)
			} else {
				require.False(t, ingress["TCP/8080"], where)
			}
		}
		// The targets: NATS in its namespace, CloudNativePG's pods, and
		// the ops port only from the monitoring namespace.
		np := b.netpols["troupe"]
		require.NotNil(t, np, name)
		var sawNATS, sawPG bool
		for _, r := range np.Spec.Egress {
			for _, to := range r.To {
				if to.NamespaceSelector != nil && to.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] == "nats" {
					sawNATS = true
					require.Equal(t, "nats.nats.svc.cluster.local", natsURL.Hostname(), "troupe.json's NATS is the one the policy lets out to")
				}
				if to.NamespaceSelector == nil && to.PodSelector != nil && r.Ports[0].Port.IntValue() == 5432 {
					sawPG = true
					// The cluster the database URL names, and the one a
					// restore creates, as CloudNativePG labels their pods.
					cluster, ok := strings.CutSuffix(dbURL.Hostname(), "-rw")
					require.True(t, ok, "the database URL is a CloudNativePG rw Service")
					for _, c := range []string{cluster, restoredClusterName(t)} {
						require.True(t, selects(t, to.PodSelector, map[string]string{"cnpg.io/cluster": c, "cnpg.io/instanceRole": "primary"}), "PostgreSQL pods of %s", c)
					}
					require.False(t, selects(t, to.PodSelector, map[string]string{"app.kubernetes.io/name": "troupe"}))
				}
			}
		}
		require.True(t, sawNATS && sawPG, name)
		for _, r := range np.Spec.Ingress {
			require.Len(t, r.From, 1)
			require.NotNil(t, r.From[0].NamespaceSelector)
			require.Equal(t, "monitoring", r.From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"])
		}
		require.Equal(t, natsPort(t), natsURL.Port(), "troupe.json's NATS port is the chart's")
	}
}

func portKey(p networkingv1.NetworkPolicyPort) string {
	proto := "TCP"
	if p.Protocol != nil {
		proto = string(*p.Protocol)
	}
	return proto + "/" + p.Port.String()
}

// restoredClusterName is the Cluster postgres/restore.yaml creates.
func restoredClusterName(t *testing.T) string {
	t.Helper()
	objs := manifestFiles(t)["postgres/restore.yaml"]
	require.Len(t, objs, 1)
	return objs[0].Name
}

// secretRefName is the Secret the workloads read TROUPE_DATABASE_URL from.
func secretRefName(t *testing.T, b *typed) string {
	t.Helper()
	e := envVar(b.deployments["orchestrator"].Spec.Template.Spec.Containers[0], "TROUPE_DATABASE_URL")
	require.NotNil(t, e)
	return e.ValueFrom.SecretKeyRef.Name
}

// TestNATSValues: the Helm values make what Troupe expects: JetStream on
// file storage on a PersistentVolumeClaim, three clustered servers (the
// streams' replicas in troupe.json), the monitoring port KEDA reads, and
// every write synced like the compose setup.
func TestNATSValues(t *testing.T) {
	t.Parallel()
	v := natsValues(t)
	cfg, _ := buildConfig(t, decodeBuild(t, buildBase, allBuilds(t)[buildBase]))
	var c struct {
		Config struct {
			Cluster struct {
				Enabled  bool `json:"enabled"`
				Replicas int  `json:"replicas"`
			} `json:"cluster"`
			JetStream struct {
				Enabled   bool `json:"enabled"`
				FileStore struct {
					Enabled bool   `json:"enabled"`
					Dir     string `json:"dir"`
					PVC     struct {
						Enabled bool   `json:"enabled"`
						Size    string `json:"size"`
					} `json:"pvc"`
				} `json:"fileStore"`
				Merge map[string]any `json:"merge"`
			} `json:"jetstream"`
			Monitor struct {
				Enabled bool `json:"enabled"`
			} `json:"monitor"`
		} `json:"config"`
	}
	require.NoError(t, json.Unmarshal(v, &c))
	require.True(t, c.Config.Cluster.Enabled)
	require.Equal(t, 3, c.Config.Cluster.Replicas)
	require.Equal(t, c.Config.Cluster.Replicas, cfg.NATS.Replicas, "troupe.json's stream replicas are the cluster's size")
	require.True(t, c.Config.JetStream.Enabled)
	require.True(t, c.Config.JetStream.FileStore.Enabled)
	require.True(t, c.Config.JetStream.FileStore.PVC.Enabled)
	require.NotEmpty(t, c.Config.JetStream.FileStore.PVC.Size)
	require.Equal(t, "always", c.Config.JetStream.Merge["sync_interval"])
	require.True(t, c.Config.Monitor.Enabled)
	require.Equal(t, "8222", natsMonitorPort(t))
}

// TestPostgresManifests: the CloudNativePG cluster has three instances,
// the troupe database owned by troupe, scheduled base backups and WAL
// archiving to object storage with credentials from the Secret next to it;
// the restore bootstraps from exactly those backups.
func TestPostgresManifests(t *testing.T) {
	t.Parallel()
	files := manifestFiles(t)
	type s3ref struct {
		Name string `json:"name"`
		Key  string `json:"key"`
	}
	type store struct {
		DestinationPath string `json:"destinationPath"`
		ServerName      string `json:"serverName"`
		S3Credentials   struct {
			AccessKeyID     s3ref `json:"accessKeyId"`
			SecretAccessKey s3ref `json:"secretAccessKey"`
		} `json:"s3Credentials"`
	}
	type cluster struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
		Spec     struct {
			Instances int `json:"instances"`
			Storage   struct {
				Size string `json:"size"`
			} `json:"storage"`
			Bootstrap struct {
				InitDB *struct {
					Database string `json:"database"`
					Owner    string `json:"owner"`
				} `json:"initdb"`
				Recovery *struct {
					Source   string `json:"source"`
					Database string `json:"database"`
					Owner    string `json:"owner"`
				} `json:"recovery"`
			} `json:"bootstrap"`
			Backup *struct {
				RetentionPolicy   string `json:"retentionPolicy"`
				BarmanObjectStore *store `json:"barmanObjectStore"`
			} `json:"backup"`
			ExternalClusters []struct {
				Name              string `json:"name"`
				BarmanObjectStore *store `json:"barmanObjectStore"`
			} `json:"externalClusters"`
		} `json:"spec"`
	}
	var db, restored cluster
	var scheduled struct {
		Spec struct {
			Cluster struct {
				Name string `json:"name"`
			} `json:"cluster"`
			Method   string `json:"method"`
			Schedule string `json:"schedule"`
		} `json:"spec"`
	}
	for _, o := range files["postgres/cluster.yaml"] {
		switch o.Kind {
		case "Cluster":
			require.NoError(t, json.Unmarshal(o.JSON, &db))
		case "ScheduledBackup":
			require.NoError(t, json.Unmarshal(o.JSON, &scheduled))
		}
	}
	require.Len(t, files["postgres/restore.yaml"], 1)
	require.NoError(t, json.Unmarshal(files["postgres/restore.yaml"][0].JSON, &restored))
	secrets := map[string]map[string]string{}
	for _, o := range files["postgres/s3-credentials.yaml"] {
		var s corev1.Secret
		require.NoError(t, json.Unmarshal(o.JSON, &s))
		secrets[s.Name] = secretValues(&s)
	}

	require.Equal(t, "troupe-db", db.Metadata.Name)
	require.Equal(t, 3, db.Spec.Instances)
	require.NotEmpty(t, db.Spec.Storage.Size)
	require.NotNil(t, db.Spec.Bootstrap.InitDB)
	require.Equal(t, "troupe", db.Spec.Bootstrap.InitDB.Database)
	require.Equal(t, "troupe", db.Spec.Bootstrap.InitDB.Owner)
	require.NotNil(t, db.Spec.Backup)
	require.NotEmpty(t, db.Spec.Backup.RetentionPolicy)
	bos := db.Spec.Backup.BarmanObjectStore
	require.NotNil(t, bos)
	require.True(t, strings.HasPrefix(bos.DestinationPath, "s3://"))
	for _, ref := range []s3ref{bos.S3Credentials.AccessKeyID, bos.S3Credentials.SecretAccessKey} {
		require.Contains(t, secrets, ref.Name)
		require.Contains(t, secrets[ref.Name], ref.Key)
	}
	require.Equal(t, db.Metadata.Name, scheduled.Spec.Cluster.Name)
	require.Equal(t, "barmanObjectStore", scheduled.Spec.Method)
	require.Len(t, strings.Fields(scheduled.Spec.Schedule), 6, "CloudNativePG schedules have a seconds field")

	// The restore reads the backups the cluster writes.
	require.Equal(t, db.Metadata.Namespace, restored.Metadata.Namespace)
	require.NotEqual(t, db.Metadata.Name, restored.Metadata.Name)
	require.NotNil(t, restored.Spec.Bootstrap.Recovery)
	require.Equal(t, "troupe", restored.Spec.Bootstrap.Recovery.Database)
	require.Equal(t, "troupe", restored.Spec.Bootstrap.Recovery.Owner)
	require.Nil(t, restored.Spec.Backup, "a restored cluster must not archive into the original's folder")
	require.Len(t, restored.Spec.ExternalClusters, 1)
	src := restored.Spec.ExternalClusters[0]
	require.Equal(t, restored.Spec.Bootstrap.Recovery.Source, src.Name)
	require.NotNil(t, src.BarmanObjectStore)
	require.Equal(t, bos.DestinationPath, src.BarmanObjectStore.DestinationPath)
	require.Equal(t, db.Metadata.Name, src.BarmanObjectStore.ServerName)
	require.Equal(t, bos.S3Credentials, src.BarmanObjectStore.S3Credentials)

	// The workloads' database is this cluster's read-write Service.
	b := decodeBuild(t, buildBase, allBuilds(t)[buildBase])
	u, err := url.Parse(secretValues(b.secrets[secretRefName(t, b)])["TROUPE_DATABASE_URL"])
	require.NoError(t, err)
	require.Equal(t, db.Metadata.Name+"-rw", u.Hostname())
	require.Equal(t, "/"+db.Spec.Bootstrap.InitDB.Database, u.Path)
	require.Equal(t, db.Spec.Bootstrap.InitDB.Owner, u.User.Username())
}

// TestHPAComponent: the alternative to KEDA replaces every ScaledObject by
// an HPA on the same worker Deployment, within the same bounds.
func TestHPAComponent(t *testing.T) {
	t.Parallel()
	builds := allBuilds(t)
	base := decodeBuild(t, buildBase, builds[buildBase])
	b := decodeBuild(t, buildHPA, builds[buildHPA])
	require.Empty(t, b.scaledObjects)
	for _, role := range schemas.Roles {
		h, ok := b.hpas["worker-"+role]
		require.True(t, ok, role)
		require.Equal(t, "apps/v1", h.Spec.ScaleTargetRef.APIVersion)
		require.Equal(t, "Deployment", h.Spec.ScaleTargetRef.Kind)
		require.Equal(t, "worker-"+role, h.Spec.ScaleTargetRef.Name)
		require.Contains(t, b.deployments, h.Spec.ScaleTargetRef.Name)
		so := base.scaledObjects["worker-"+role]
		require.Equal(t, *so.Spec.MinReplicaCount, *h.Spec.MinReplicas, role)
		require.Equal(t, *so.Spec.MaxReplicaCount, h.Spec.MaxReplicas, role)
		require.NotEmpty(t, h.Spec.Metrics)
	}
}

// TestCRDsAreTheOperatorsOwn: the CRDs in testdata are the files
// testdata/crds/README.md says they were copied from, unchanged.
func TestCRDsAreTheOperatorsOwn(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("testdata/crds/README.md")
	require.NoError(t, err)
	row := regexp.MustCompile(`(?m)^\| (\S+\.yaml) \| (\S+@v\S+) \| (\S+) \| ([0-9a-f]{64}) \|$`)
	listed := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(string(raw), -1) {
		data, err := os.ReadFile(filepath.Join("testdata/crds", m[1]))
		require.NoError(t, err)
		require.Equal(t, m[4], fmt.Sprintf("%x", sha256.Sum256(data)), "%s is not %s's %s", m[1], m[2], m[3])
		listed[m[1]] = true
	}
	files, err := filepath.Glob("testdata/crds/*.yaml")
	require.NoError(t, err)
	require.Len(t, listed, len(files))
	for _, f := range files {
		require.True(t, listed[filepath.Base(f)], "%s: say where it comes from", f)
	}
	crds := loadCRDs(t)
	for _, k := range []string{"keda.sh/v1alpha1 ScaledObject", "monitoring.coreos.com/v1 ServiceMonitor",
		"postgresql.cnpg.io/v1 Cluster", "postgresql.cnpg.io/v1 ScheduledBackup"} {
		require.Contains(t, crds, k)
	}
}

// TestReadmesNameRealPaths: the paths and commands the READMEs give exist.
func TestReadmesNameRealPaths(t *testing.T) {
	t.Parallel()
	path := regexp.MustCompile(`deploy/k8s/[A-Za-z0-9_./-]*[A-Za-z0-9_]`)
	for _, f := range []string{"README.md", "../../README.md"} {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		found := path.FindAllString(string(raw), -1)
		require.NotEmpty(t, found, f)
		for _, p := range found {
			if strings.HasPrefix(p, "deploy/k8s/overlays/prod") {
				continue // the copy of the example the README has you make
			}
			if strings.Contains(p, "/nats-secrets") {
				continue // troupe nats-config writes them, and git ignores them
			}
			if strings.HasSuffix(p, "/secrets.env") {
				p += ".example" // git ignores the real one: it is made from the template
			}
			_, err := os.Stat(filepath.Join("../..", p))
			require.NoError(t, err, "%s names %s", f, p)
		}
	}
	raw, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	readme := string(raw)
	compose, k8s := strings.Index(readme, "## Run with docker compose"), strings.Index(readme, "## Run on Kubernetes")
	require.True(t, compose >= 0 && k8s > compose, "Run on Kubernetes follows Run with docker compose")
	for _, cmd := range []string{
		"-f deploy/k8s/nats/values.yaml", "kubectl apply -f deploy/k8s/postgres/cluster.yaml",
		"kubectl apply -k deploy/k8s/overlays/example", "kubectl -n troupe port-forward svc/review 8080",
	} {
		require.Contains(t, readme[k8s:], cmd)
	}
}

// Helpers reading the builds.

func namedPort(t *testing.T, c corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port %s", c.Name, name)
	return 0
}

func resolvePort(t *testing.T, c corev1.Container, p intstr.IntOrString) int32 {
	t.Helper()
	if p.Type == intstr.String {
		return namedPort(t, c, p.StrVal)
	}
	return p.IntVal
}

func envVar(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// selects reports whether sel matches a pod with labels set; an empty
// selector matches every pod, a nil one none.
func selects(t *testing.T, sel *metav1.LabelSelector, set map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	require.NoError(t, err)
	return s.Matches(labels.Set(set))
}

// containerEnv is a container's environment as the kubelet would set it
// from the build: literal values, Secret keys, and TROUPE_CONFIG pointing
// at the ConfigMap's files, written to a directory of this test.
func containerEnv(t *testing.T, b *typed, spec corev1.PodSpec, c corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.SecretRef != nil {
			s, ok := b.secrets[ef.SecretRef.Name]
			require.True(t, ok, ef.SecretRef.Name)
			for k, v := range secretValues(s) {
				env[ef.Prefix+k] = v
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			s, ok := b.secrets[e.ValueFrom.SecretKeyRef.Name]
			require.True(t, ok, e.ValueFrom.SecretKeyRef.Name)
			v, ok := secretValues(s)[e.ValueFrom.SecretKeyRef.Key]
			require.True(t, ok, "%s: no key %s", e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
			env[e.Name] = v
		default:
			t.Fatalf("%s: env %s: only values and Secret keys are expected", c.Name, e.Name)
		}
	}
	if path, ok := env["TROUPE_CONFIG"]; ok {
		dir := t.TempDir()
		env["TROUPE_CONFIG"] = materialize(t, b, spec, c, path, dir)
	}
	return env
}

// materialize writes the ConfigMap volume that holds path into dir, as the
// kubelet would mount it, and returns where path is there. It fails the
// test when no read-only ConfigMap volume mounted in c holds path.
func materialize(t *testing.T, b *typed, spec corev1.PodSpec, c corev1.Container, path, dir string) string {
	t.Helper()
	for _, m := range c.VolumeMounts {
		rel, err := filepath.Rel(m.MountPath, path)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		require.True(t, m.ReadOnly, "%s: mount %s read-only", c.Name, m.MountPath)
		for _, v := range spec.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			cm, ok := b.configMaps[v.ConfigMap.Name]
			require.True(t, ok, "%s: ConfigMap %s is not in the build", c.Name, v.ConfigMap.Name)
			data, ok := cm.Data[rel]
			require.True(t, ok, "%s: ConfigMap %s has no %s", c.Name, cm.Name, rel)
			out := filepath.Join(dir, rel)
			require.NoError(t, os.WriteFile(out, []byte(data), 0o644))
			return out
		}
	}
	t.Fatalf("%s: TROUPE_CONFIG=%s is on no ConfigMap volume", c.Name, path)
	return ""
}

// envMu serialises buildConfig's changes to the environment.
var envMu sync.Mutex

// buildConfig parses the build's troupe.json (the one the orchestrator
// mounts) with the real loader, with a value for every ${VAR} it names,
// and returns the configuration and the file.
func buildConfig(t *testing.T, b *typed) (config.Config, string) {
	t.Helper()
	o := b.deployments["orchestrator"]
	require.NotNil(t, o)
	c := o.Spec.Template.Spec.Containers[0]
	e := envVar(c, "TROUPE_CONFIG")
	require.NotNil(t, e, "orchestrator: TROUPE_CONFIG")
	require.Equal(t, "/etc/troupe/troupe.json", e.Value)
	path := materialize(t, b, o.Spec.Template.Spec, c, e.Value, t.TempDir())
	raw, err := os.ReadFile(path)
	require.NoError(t, err)

	envMu.Lock()
	defer envMu.Unlock()
	for _, name := range envRefs(string(raw)) {
		old, had := os.LookupEnv(name)
		require.NoError(t, os.Setenv(name, "value-of-"+name))
		defer func() {
			if had {
				_ = os.Setenv(name, old)
			} else {
				_ = os.Unsetenv(name)
			}
		}()
	}
	cfg, err := config.Parse(raw)
	require.NoError(t, err, "%s: troupe.json", b.name)
	require.NoError(t, cfg.Validate())
	return cfg, string(raw)
}

func natsValues(t *testing.T) []byte {
	t.Helper()
	raw, err := os.ReadFile("nats/values.yaml")
	require.NoError(t, err)
	js, err := yaml.YAMLToJSONStrict(raw)
	require.NoError(t, err)
	return js
}

func natsMonitorPort(t *testing.T) string {
	t.Helper()
	var v struct {
		Config struct {
			Monitor struct {
				Port int `json:"port"`
			} `json:"monitor"`
		} `json:"config"`
	}
	require.NoError(t, json.Unmarshal(natsValues(t), &v))
	require.NotZero(t, v.Config.Monitor.Port)
	return strconv.Itoa(v.Config.Monitor.Port)
}

func natsPort(t *testing.T) string {
	t.Helper()
	var v struct {
		Config struct {
			NATS struct {
				Port int `json:"port"`
			} `json:"nats"`
		} `json:"config"`
	}
	require.NoError(t, json.Unmarshal(natsValues(t), &v))
	require.NotZero(t, v.Config.NATS.Port)
	return strconv.Itoa(v.Config.NATS.Port)
}

func serviceMonitorPath(t *testing.T, b *typed) string {
	t.Helper()
	for _, o := range allBuilds(t)[b.name] {
		if o.Kind == "ServiceMonitor" {
			var sm struct {
				Spec struct {
					Endpoints []struct {
						Path string `json:"path"`
					} `json:"endpoints"`
				} `json:"spec"`
			}
			require.NoError(t, json.Unmarshal(o.JSON, &sm))
			require.NotEmpty(t, sm.Spec.Endpoints)
			return sm.Spec.Endpoints[0].Path
		}
	}
	t.Fatal("no ServiceMonitor")
	return ""
}

// binDir holds the binary buildBinary built, for TestMain to remove.
var binDir string

// buildBinary builds cmd/troupe once for the package's tests.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "troupe-k8s-test-")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "troupe")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/troupe")
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/troupe: %w\n%s", err, out)
	}
	return bin, nil
})

func troupeBinary(t *testing.T) string {
	t.Helper()
	bin, err := buildBinary()
	require.NoError(t, err)
	return bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// runEnv is the binary with args and exactly env (and PATH), killed when
// ctx ends.
func runEnv(ctx context.Context, bin string, args []string, env map[string]string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir()}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// TestConfigMapUpdatesInPlace: the configuration ConfigMap keeps its name
// in every build, and every pod mounts it as a directory (no subPath),
// so an edit reaches the running services, which apply it live.
func TestConfigMapUpdatesInPlace(t *testing.T) {
	t.Parallel()
	for name, objs := range allBuilds(t) {
		b := decodeBuild(t, name, objs)
		_, ok := b.configMaps["troupe-config"]
		require.True(t, ok, "%s: the ConfigMap is named troupe-config, without a hash suffix", name)
		for _, w := range b.workloads() {
			if w.kind != "Deployment" {
				continue // the migration reads only the database URL
			}
			mounted := false
			for _, v := range w.spec.Volumes {
				if v.ConfigMap == nil || v.ConfigMap.Name != "troupe-config" {
					continue
				}
				for _, c := range w.spec.Containers {
					for _, m := range c.VolumeMounts {
						if m.Name == v.Name {
							mounted = true
							require.Empty(t, m.SubPath, "%s %s: a subPath mount is never updated", name, w.name)
							require.Equal(t, "/etc/troupe/troupe.json", envVar(c, "TROUPE_CONFIG").Value, "%s %s", name, w.name)
						}
					}
				}
			}
			require.True(t, mounted, "%s %s mounts the configuration", name, w.name)
		}
	}
}
