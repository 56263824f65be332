package k8s_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	kyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
)

// object is one Kubernetes object: from a kustomize build or a file.
type object struct {
	Source     string // the build or file it came from
	APIVersion string
	Kind       string
	Name       string
	JSON       []byte
}

func (o object) String() string {
	return fmt.Sprintf("%s %s/%s (%s)", o.APIVersion, o.Kind, o.Name, o.Source)
}

// newObject reads one YAML document. Duplicate keys are an error.
func newObject(source string, doc []byte) (object, error) {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return object{}, fmt.Errorf("%s: %w", source, err)
	}
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(js, &head); err != nil {
		return object{}, fmt.Errorf("%s: %w", source, err)
	}
	return object{Source: source, APIVersion: head.APIVersion, Kind: head.Kind, Name: head.Metadata.Name, JSON: js}, nil
}

// splitYAML returns the non-empty documents of a YAML stream.
func splitYAML(data []byte) ([][]byte, error) {
	r := kyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(stripComments(doc))) > 0 {
			docs = append(docs, doc)
		}
	}
}

func stripComments(doc []byte) []byte {
	var out []byte
	for line := range bytes.Lines(doc) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' && !bytes.Equal(t, []byte("---")) {
			out = append(out, line...)
		}
	}
	return out
}

// kustomize builds dir on fSys the way `kubectl apply -k` does.
func kustomize(fSys filesys.FileSystem, dir, source string) ([]object, error) {
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fSys, dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", source, err)
	}
	var out []object
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, fmt.Errorf("kustomize build %s: %w", source, err)
		}
		o, err := newObject(source, y)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("kustomize build %s: no objects", source)
	}
	return out, nil
}

// The builds: the base, the example overlay, and the base with the HPA
// component, which nothing in the repository builds (it is not in the
// default build), so it is built from a copy in memory with a
// kustomization that adds it.
const (
	buildBase    = "base"
	buildOverlay = "overlays/example"
	buildHPA     = "base + components/hpa"
)

var buildAll = sync.OnceValues(func() (map[string][]object, error) {
	out := map[string][]object{}
	var err error
	if out[buildBase], err = kustomize(filesys.MakeFsOnDisk(), "base", buildBase); err != nil {
		return nil, err
	}
	mem := filesys.MakeFsInMemory()
	if err := copyToMemory(mem, ".", "/k8s"); err != nil {
		return nil, err
	}
	// The overlay as a fresh checkout fills it in: secrets.env copied from
	// the tracked template (a real one stays out of git, and out of here).
	if err := exampleSecrets(mem, "/k8s/overlays/example"); err != nil {
		return nil, err
	}
	if out[buildOverlay], err = kustomize(mem, "/k8s/overlays/example", buildOverlay); err != nil {
		return nil, err
	}
	if err := mem.MkdirAll("/k8s/hpa-build"); err != nil {
		return nil, err
	}
	if err := mem.WriteFile("/k8s/hpa-build/kustomization.yaml", []byte(
		"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../base\ncomponents:\n  - ../components/hpa\n")); err != nil {
		return nil, err
	}
	if out[buildHPA], err = kustomize(mem, "/k8s/hpa-build", buildHPA); err != nil {
		return nil, err
	}
	return out, nil
})

// exampleSecrets fills in the overlay as its README says: secrets.env
// from its template, secrets.env.example, and an env file per service in
// nats-secrets/ as troupe nats-config writes them (placeholders here;
// TestEachServiceHasItsOwnUsers builds with the real ones).
func exampleSecrets(mem filesys.FileSystem, overlay string) error {
	return fillOverlay(overlay, mem.ReadFile, mem.WriteFile, nil)
}

// fillOverlay writes the overlay's secrets.env from its template, and
// nats-secrets/<user>.env for each service's user: from natsEnv (the
// files troupe nats-config wrote, by user) or placeholders.
func fillOverlay(overlay string, read func(string) ([]byte, error), write func(string, []byte) error, natsEnv map[string][]byte) error {
	b, err := read(filepath.Join(overlay, "secrets.env.example"))
	if err != nil {
		return err
	}
	if err := write(filepath.Join(overlay, "secrets.env"), b); err != nil {
		return err
	}
	for _, user := range serviceUsers() {
		body, ok := natsEnv[user]
		if !ok {
			body = []byte("TROUPE_NATS_USER=" + user + "\nTROUPE_NATS_PASSWORD=change-me\nTROUPE_NATS_INBOX_PREFIX=" + bus.InboxPrefix(user) + "\n")
		}
		if err := write(filepath.Join(overlay, "nats-secrets", user+".env"), body); err != nil {
			return err
		}
	}
	return nil
}

// serviceUsers are the NATS users of the services the manifests run.
func serviceUsers() []string {
	users := []string{bus.UserOrchestrator, bus.UserReview}
	for _, r := range schemas.Roles {
		users = append(users, bus.WorkerUser(r))
	}
	return users
}

func allBuilds(t *testing.T) map[string][]object {
	t.Helper()
	b, err := buildAll()
	require.NoError(t, err)
	return b
}

func copyToMemory(mem filesys.FileSystem, from, to string) error {
	return filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == "testdata" {
				return filepath.SkipDir
			}
			return mem.MkdirAll(filepath.Join(to, p))
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return mem.WriteFile(filepath.Join(to, p), b)
	})
}

// manifestFiles returns every Kubernetes manifest under deploy/k8s by
// file: each YAML document with an apiVersion and a kind, except
// kustomize's own files and the patches kustomizations apply (partial
// objects, checked through the builds that apply them).
func manifestFiles(t *testing.T) map[string][]object {
	t.Helper()
	patches := map[string]bool{}
	files := map[string][]object{}
	var yamls []string
	require.NoError(t, filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "testdata" {
			return filepath.SkipDir
		}
		if d.IsDir() || (filepath.Ext(p) != ".yaml" && filepath.Ext(p) != ".yml") {
			return nil
		}
		if d.Name() == "kustomization.yaml" {
			var k struct {
				Patches []struct {
					Path string `json:"path"`
				} `json:"patches"`
			}
			raw, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if err := yaml.Unmarshal(raw, &k); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			for _, patch := range k.Patches {
				if patch.Path != "" {
					patches[filepath.Join(filepath.Dir(p), patch.Path)] = true
				}
			}
			return nil
		}
		yamls = append(yamls, p)
		return nil
	}))
	for _, p := range yamls {
		if patches[p] {
			continue
		}
		raw, err := os.ReadFile(p)
		require.NoError(t, err)
		docs, err := splitYAML(raw)
		require.NoError(t, err, p)
		for _, doc := range docs {
			o, err := newObject(p, doc)
			require.NoError(t, err)
			if o.APIVersion == "" || o.Kind == "" {
				continue // not a manifest (Helm values)
			}
			files[p] = append(files[p], o)
		}
	}
	return files
}

// Strict decoding of the built-in kinds: the API machinery's own strict
// serializer, which fails on unknown and duplicate fields.
var (
	scheme        = runtime.NewScheme()
	strictDecoder runtime.Decoder
)

func init() {
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, policyv1.AddToScheme,
		networkingv1.AddToScheme, autoscalingv2.AddToScheme,
	} {
		utilruntime.Must(add(scheme))
	}
	strictDecoder = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
}

// crd is one served version of a CustomResourceDefinition, its schema made
// strict and compiled.
type crd struct {
	file   string
	schema *jsonschema.Schema
}

// compiledCRDs are the CRDs in testdata/crds (copied from the operators'
// modules, see testdata/crds/README.md), by apiVersion + " " + kind.
var compiledCRDs = sync.OnceValues(func() (map[string]crd, error) { return compileCRDs("testdata/crds") })

func loadCRDs(t *testing.T) map[string]crd {
	t.Helper()
	crds, err := compiledCRDs()
	require.NoError(t, err)
	return crds
}

// compileCRDs compiles each served version's openAPIV3Schema of the CRDs
// in dir as a JSON Schema made strict (strictSchema).
func compileCRDs(dir string) (map[string]crd, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	out := map[string]crd{}
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		js, err := yaml.YAMLToJSON(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		var def struct {
			Kind string `json:"kind"`
			Spec struct {
				Group string `json:"group"`
				Names struct {
					Kind string `json:"kind"`
				} `json:"names"`
				Versions []struct {
					Name   string `json:"name"`
					Served bool   `json:"served"`
					Schema struct {
						OpenAPIV3Schema json.RawMessage `json:"openAPIV3Schema"`
					} `json:"schema"`
				} `json:"versions"`
			} `json:"spec"`
		}
		if err := json.Unmarshal(js, &def); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if def.Kind != "CustomResourceDefinition" {
			return nil, fmt.Errorf("%s: a %s, not a CustomResourceDefinition", p, def.Kind)
		}
		for _, v := range def.Spec.Versions {
			if !v.Served {
				continue
			}
			doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(v.Schema.OpenAPIV3Schema))
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", p, v.Name, err)
			}
			root, ok := doc.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s %s: openAPIV3Schema is not an object", p, v.Name)
			}
			strictSchema(root, true)
			url := "mem:///" + def.Spec.Group + "/" + v.Name + "/" + def.Spec.Names.Kind + ".json"
			if err := c.AddResource(url, root); err != nil {
				return nil, fmt.Errorf("%s %s: %w", p, v.Name, err)
			}
			sch, err := c.Compile(url)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", p, v.Name, err)
			}
			out[def.Spec.Group+"/"+v.Name+" "+def.Spec.Names.Kind] = crd{file: p, schema: sch}
		}
	}
	return out, nil
}

// strictSchema turns a CRD's structural OpenAPI v3 schema into a strict
// JSON Schema, in place:
//   - an object schema gets additionalProperties: false unless it says
//     x-kubernetes-preserve-unknown-fields or has additionalProperties (a
//     map), so a field the CRD does not declare fails as the API server
//     would have pruned it silently. That includes objects with no
//     properties at all: the server prunes everything in them. The root's
//     metadata is the exception: the server checks it as ObjectMeta (and
//     so does validate).
//   - nullable: true becomes a type that also admits null.
//
// Only the structural skeleton (properties, items, additionalProperties)
// is made strict: the allOf/anyOf/oneOf/not of structural schemas only
// constrain values and may not declare fields of their own.
func strictSchema(s map[string]any, root bool) {
	if nullable, _ := s["nullable"].(bool); nullable {
		if typ, ok := s["type"].(string); ok {
			s["type"] = []any{typ, "null"}
		}
		delete(s, "nullable")
	}
	props, _ := s["properties"].(map[string]any)
	preserve, _ := s["x-kubernetes-preserve-unknown-fields"].(bool)
	embedded, _ := s["x-kubernetes-embedded-resource"].(bool)
	_, hasAdditional := s["additionalProperties"]
	isObject := s["type"] == "object" || props != nil
	if isObject && !preserve && !embedded && !hasAdditional {
		s["additionalProperties"] = false
	}
	for name, p := range props {
		ps, ok := p.(map[string]any)
		if !ok {
			continue
		}
		if root && name == "metadata" {
			continue
		}
		strictSchema(ps, false)
	}
	if items, ok := s["items"].(map[string]any); ok {
		strictSchema(items, false)
	}
	if ap, ok := s["additionalProperties"].(map[string]any); ok {
		strictSchema(ap, false)
	}
}

// validate checks o strictly: a built-in kind against the Kubernetes API
// types, a custom resource against its CRD's schema. A kind that is
// neither is an error: there is nothing to check it against.
func validate(crds map[string]crd, o object) (runtime.Object, error) {
	if def, ok := crds[o.APIVersion+" "+o.Kind]; ok {
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(o.JSON))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o, err)
		}
		if err := def.schema.Validate(doc); err != nil {
			return nil, fmt.Errorf("%s: against %s: %w", o, def.file, err)
		}
		var meta struct {
			Metadata json.RawMessage `json:"metadata"`
		}
		if err := json.Unmarshal(o.JSON, &meta); err != nil {
			return nil, err
		}
		var om metav1.ObjectMeta
		if err := yaml.UnmarshalStrict(meta.Metadata, &om); err != nil {
			return nil, fmt.Errorf("%s: metadata: %w", o, err)
		}
		if o.Kind == "ScaledObject" {
			if err := checkKEDATriggers(o); err != nil {
				return nil, fmt.Errorf("%s: %w", o, err)
			}
		}
		return nil, nil
	}
	obj, _, err := strictDecoder.Decode(o.JSON, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o, err)
	}
	return obj, nil
}

// natsJetStreamMetadata are the trigger metadata keys KEDA's nats-jetstream
// scaler reads (true: required), from natsJetStreamMetadata in
// pkg/scalers/nats_jetstream_scaler.go of KEDA v2.21.0. The CRD types
// trigger metadata as a map of strings, so its schema cannot catch a
// misspelt key; KEDA would ignore it and use its default.
var natsJetStreamMetadata = map[string]bool{
	"account": false, "accountID": false, "stream": true, "consumer": true,
	"lagThreshold": false, "activationLagThreshold": false, "useHttps": false,
	"natsServerMonitoringEndpoint": true,
}

func checkKEDATriggers(o object) error {
	var so scaledObject
	if err := json.Unmarshal(o.JSON, &so); err != nil {
		return err
	}
	for i, tr := range so.Spec.Triggers {
		if tr.Type != "nats-jetstream" {
			return fmt.Errorf("triggers[%d]: type %q: only nats-jetstream is checked here", i, tr.Type)
		}
		var errs []error
		for k := range tr.Metadata {
			if _, ok := natsJetStreamMetadata[k]; !ok {
				errs = append(errs, fmt.Errorf("triggers[%d].metadata.%s: not a nats-jetstream setting", i, k))
			}
		}
		for k, required := range natsJetStreamMetadata {
			if _, ok := tr.Metadata[k]; required && !ok {
				errs = append(errs, fmt.Errorf("triggers[%d].metadata.%s: required", i, k))
			}
		}
		if tr.Metadata["account"] == "" && tr.Metadata["accountID"] == "" {
			errs = append(errs, fmt.Errorf("triggers[%d].metadata: account or accountID is required", i))
		}
		for _, k := range []string{"lagThreshold", "activationLagThreshold"} {
			if v, ok := tr.Metadata[k]; ok {
				if _, err := strconv.ParseInt(v, 10, 64); err != nil {
					errs = append(errs, fmt.Errorf("triggers[%d].metadata.%s: %q is not an integer", i, k, v))
				}
			}
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	return nil
}

// scaledObject is the part of a KEDA ScaledObject the tests read.
type scaledObject struct {
	Metadata metav1.ObjectMeta `json:"metadata"`
	Spec     struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		Triggers        []struct {
			Type     string            `json:"type"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

// typed is one build, every object validated and decoded.
type typed struct {
	name          string
	deployments   map[string]*appsv1.Deployment
	jobs          map[string]*batchv1.Job
	services      map[string]*corev1.Service
	configMaps    map[string]*corev1.ConfigMap
	secrets       map[string]*corev1.Secret
	pdbs          map[string]*policyv1.PodDisruptionBudget
	netpols       map[string]*networkingv1.NetworkPolicy
	hpas          map[string]*autoscalingv2.HorizontalPodAutoscaler
	namespaces    map[string]*corev1.Namespace
	scaledObjects map[string]scaledObject
	kinds         map[string]int
}

func decodeBuild(t *testing.T, name string, objs []object) *typed {
	t.Helper()
	crds := loadCRDs(t)
	b := &typed{
		name: name, deployments: map[string]*appsv1.Deployment{}, jobs: map[string]*batchv1.Job{},
		services: map[string]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{},
		secrets: map[string]*corev1.Secret{}, pdbs: map[string]*policyv1.PodDisruptionBudget{},
		netpols: map[string]*networkingv1.NetworkPolicy{}, hpas: map[string]*autoscalingv2.HorizontalPodAutoscaler{},
		namespaces: map[string]*corev1.Namespace{}, scaledObjects: map[string]scaledObject{}, kinds: map[string]int{},
	}
	for _, o := range objs {
		obj, err := validate(crds, o)
		require.NoError(t, err)
		b.kinds[o.Kind]++
		switch v := obj.(type) {
		case *appsv1.Deployment:
			b.deployments[v.Name] = v
		case *batchv1.Job:
			b.jobs[v.Name] = v
		case *corev1.Service:
			b.services[v.Name] = v
		case *corev1.ConfigMap:
			b.configMaps[v.Name] = v
		case *corev1.Secret:
			b.secrets[v.Name] = v
		case *policyv1.PodDisruptionBudget:
			b.pdbs[v.Name] = v
		case *networkingv1.NetworkPolicy:
			b.netpols[v.Name] = v
		case *autoscalingv2.HorizontalPodAutoscaler:
			b.hpas[v.Name] = v
		case *corev1.Namespace:
			b.namespaces[v.Name] = v
		case nil:
			if o.Kind == "ScaledObject" {
				var so scaledObject
				require.NoError(t, json.Unmarshal(o.JSON, &so))
				b.scaledObjects[so.Metadata.Name] = so
			}
		}
	}
	return b
}

// workload is a pod template and where it is.
type workload struct {
	kind, name string
	replicas   *int32
	labels     map[string]string
	spec       corev1.PodSpec
}

func (b *typed) workloads() []workload {
	var out []workload
	for _, d := range b.deployments {
		out = append(out, workload{"Deployment", d.Name, d.Spec.Replicas, d.Spec.Template.Labels, d.Spec.Template.Spec})
	}
	for _, j := range b.jobs {
		out = append(out, workload{"Job", j.Name, nil, j.Spec.Template.Labels, j.Spec.Template.Spec})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].kind+out[i].name < out[j].kind+out[j].name })
	return out
}

// secretValues returns a Secret's values, whichever field holds them.
func secretValues(s *corev1.Secret) map[string]string {
	out := map[string]string{}
	for k, v := range s.Data {
		out[k] = string(v)
	}
	for k, v := range s.StringData {
		out[k] = v
	}
	return out
}

// flagValue returns the value of --name (or -name) in args.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		for _, p := range []string{"--" + name, "-" + name} {
			if a == p && i+1 < len(args) {
				return args[i+1], true
			}
			if v, ok := strings.CutPrefix(a, p+"="); ok {
				return v, true
			}
		}
	}
	return "", false
}

// withFlag returns args with the value of --name replaced.
func withFlag(args []string, name, value string) []string {
	out := slices.Clone(args)
	for i, a := range out {
		for _, p := range []string{"--" + name, "-" + name} {
			if a == p && i+1 < len(out) {
				out[i+1] = value
			}
			if strings.HasPrefix(a, p+"=") {
				out[i] = p + "=" + value
			}
		}
	}
	return out
}

// grace is the --grace a service command runs with (its default is 30s).
func grace(t *testing.T, args []string) time.Duration {
	t.Helper()
	v, ok := flagValue(args, "grace")
	if !ok {
		return 30 * time.Second
	}
	d, err := time.ParseDuration(v)
	require.NoError(t, err, "--grace %q", v)
	return d
}
