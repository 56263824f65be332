package k8s_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// kustomizeBinEnv lists kustomize binaries (separated like PATH) to build
// the manifests with, besides the kustomize/api this module links: the
// versions kubectl ships. .ci/run builds v5.4.3 (the v5.4 line of kubectl
// 1.31; 1.32 has v5.5) from the Go module proxy, and adds kubectl when there is one
// (a path ending in kubectl builds with "kubectl kustomize").
const kustomizeBinEnv = "TROUPE_TEST_KUSTOMIZE"

// TestOlderKustomizeBuilds: each kustomize binary named in
// TROUPE_TEST_KUSTOMIZE builds the base, the example overlay and the HPA
// component to the same objects as the kustomize this module links. The
// HPA component's "$patch: delete" documents, all in one file, made
// kustomize v5.4 to v5.6 panic (kubernetes-sigs/kustomize#5471), which
// the newer one hid.
func TestOlderKustomizeBuilds(t *testing.T) {
	t.Parallel()
	bins := filepath.SplitList(os.Getenv(kustomizeBinEnv))
	if len(bins) == 0 {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI: set %s to a kustomize v5.4.3 binary (.ci/run builds one)", kustomizeBinEnv)
		}
		t.Skipf("set %s=/path/to/kustomize (e.g. GOBIN=/tmp/k go install sigs.k8s.io/kustomize/kustomize/v5@v5.4.3) to build the manifests with kubectl's kustomize too", kustomizeBinEnv)
	}
	// A copy, as a fresh checkout is filled in: the overlay's secrets,
	// and a kustomization that adds the HPA component.
	dir := t.TempDir()
	require.NoError(t, os.CopyFS(dir, os.DirFS(".")))
	require.NoError(t, fillOverlay(filepath.Join(dir, "overlays/example"), os.ReadFile, func(p string, b []byte) error {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		return os.WriteFile(p, b, 0o600)
	}, nil))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "hpa-build"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "hpa-build/kustomization.yaml"), []byte(
		"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../base\ncomponents:\n  - ../components/hpa\n"), 0o644))

	builds := allBuilds(t)
	ids := func(objs []object) []string {
		var out []string
		for _, o := range objs {
			out = append(out, o.APIVersion+" "+o.Kind+"/"+o.Name)
		}
		slices.Sort(out)
		return out
	}
	for _, bin := range bins {
		// kubectl builds with "kubectl kustomize DIR", its kustomize.
		versionArgs, build := []string{"version"}, "build"
		if filepath.Base(bin) == "kubectl" {
			versionArgs, build = []string{"version", "--client"}, "kustomize"
		}
		version, err := exec.Command(bin, versionArgs...).CombinedOutput()
		require.NoError(t, err, "%s version: %s", bin, version)
		for name, sub := range map[string]string{buildBase: "base", buildOverlay: "overlays/example", buildHPA: "hpa-build"} {
			out, err := exec.Command(bin, build, filepath.Join(dir, sub)).CombinedOutput()
			require.NoError(t, err, "%s (%s) build %s:\n%s", bin, version, name, out)
			docs, err := splitYAML(out)
			require.NoError(t, err)
			var objs []object
			for _, d := range docs {
				o, err := newObject(name, d)
				require.NoError(t, err)
				objs = append(objs, o)
			}
			require.Equal(t, ids(builds[name]), ids(objs), "%s (%s) build %s", bin, version, name)
		}
	}
}
