package schemas

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Schema names, one per document Troupe exchanges. Pass them to Validate,
// Decode and Schema.
const (
	SchemaSubmission            = "submission"               // Submission, on troupe.api.jobs.submit
	SchemaTask                  = "task"                     // TaskMessage, on troupe.tasks.<role>
	SchemaReviewRequest         = "review_request"           // ReviewRequest, on troupe.review.<role>
	SchemaOutput                = "output"                   // Output
	SchemaReviewDecision        = "review_decision"          // ReviewDecision, on troupe.api.reviews.decide
	SchemaReview                = "review"                   // Review
	SchemaEvent                 = "event"                    // Event, on troupe.events.<job_id>.<kind>
	SchemaDeadLetter            = "dead_letter"              // DeadLetter, on troupe.dlq.<source>
	SchemaJob                   = "job"                      // Job, the reply of troupe.api.jobs.submit and get
	SchemaJobList               = "job_list"                 // JobList
	SchemaReviewList            = "review_list"              // ReviewList
	SchemaLessonList            = "lesson_list"              // LessonList
	SchemaArtifact              = "artifact"                 // Artifact
	SchemaArtifactList          = "artifact_list"            // ArtifactList
	SchemaErrorReply            = "error_reply"              // ErrorReply, the body of every API error
	SchemaIDRequest             = "id_request"               // IDRequest
	SchemaListRequest           = "list_request"             // ListRequest
	SchemaArtifactListRequest   = "artifact_list_request"    // ArtifactListRequest, on troupe.api.artifacts.list
	SchemaArtifactGetRequest    = "artifact_get_request"     // ArtifactGetRequest, on troupe.api.artifacts.get
	SchemaDeadLetterFilter      = "dead_letter_filter"       // DeadLetterFilter
	SchemaDeadLetterListRequest = "dead_letter_list_request" // DeadLetterListRequest, on troupe.api.dlq.list
	SchemaDeadLetterList        = "dead_letter_list"         // DeadLetterList
	SchemaDeadLetterAction      = "dead_letter_action"       // DeadLetterAction, on troupe.api.dlq.replay and discard
	SchemaDeadLetterActionReply = "dead_letter_action_reply" // DeadLetterActionReply
	SchemaModelReview           = "model_review"             // ModelReview, a model reviewer's answer
	SchemaSubmissionBatch       = "submission_batch"         // SubmissionBatch, on troupe.api.jobs.submit_batch
	SchemaSubmissionBatchReply  = "submission_batch_reply"   // SubmissionBatchReply
)

// commonName is the file of definitions the documents share. Schema returns
// it, so that a copy of the schemas resolves, but it validates nothing.
const commonName = "common"

// BaseURL prefixes every schema's $id: the $id of "submission" is
// BaseURL + "submission.json".
const BaseURL = "https://troupe.dev/schemas/"

// ErrInvalid matches every error of Validate and Decode that is the
// payload's fault (invalid JSON or a document its schema rejects), so that
// callers can tell a permanent error from their own mistakes.
var ErrInvalid = errors.New("invalid message")

//go:embed json/*.json
var files embed.FS

// names lists the documents, sorted.
var names = []string{
	SchemaArtifact, SchemaArtifactGetRequest, SchemaArtifactList, SchemaArtifactListRequest, SchemaDeadLetter, SchemaDeadLetterAction, SchemaDeadLetterActionReply, SchemaDeadLetterFilter, SchemaDeadLetterList, SchemaDeadLetterListRequest, SchemaErrorReply,
	SchemaEvent, SchemaIDRequest, SchemaJob, SchemaJobList, SchemaLessonList,
	SchemaListRequest, SchemaModelReview, SchemaOutput, SchemaReview, SchemaReviewDecision,
	SchemaReviewList, SchemaReviewRequest, SchemaSubmission, SchemaSubmissionBatch, SchemaSubmissionBatchReply, SchemaTask,
}

// Names returns the name of every schema Validate accepts, sorted.
func Names() []string {
	return slices.Clone(names)
}

// Schema returns the JSON Schema document of a name in Names, or of
// "common", the definitions they share, or nil for any other name.
func Schema(name string) []byte {
	b, ok := set().raw[name]
	if !ok {
		return nil
	}
	return bytes.Clone(b)
}

// Validate checks that data is one JSON document that the named schema
// accepts. It returns a *SyntaxError when data is not JSON and a
// *ValidationError, naming each wrong field, when the schema rejects it;
// both match ErrInvalid. An unknown schema name is the caller's mistake and
// does not.
func Validate(schema string, data []byte) error {
	s := set()
	sch, ok := s.compiled[schema]
	if !ok {
		return fmt.Errorf("schemas: unknown schema %q", schema)
	}
	v, probs, err := parse(data)
	if err != nil {
		return err
	}
	if len(probs) > 0 {
		return &ValidationError{Schema: schema, Problems: sortProblems(v, probs)}
	}
	err = sch.Validate(v)
	if err == nil {
		return nil
	}
	var verr *jsonschema.ValidationError
	if !errors.As(err, &verr) {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return &ValidationError{Schema: schema, Problems: s.problems(verr, v)}
}

// Decode validates data against the named schema and unmarshals it into a T.
func Decode[T any](schema string, data []byte) (T, error) {
	var v T
	if err := Validate(schema, data); err != nil {
		return v, err
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return v, fmt.Errorf("%w: decoding %s: %v", ErrInvalid, schema, err)
	}
	return v, nil
}

// parse decodes data as encoding/json does, but keeps numbers as
// json.Number so that integers keep their precision. It also returns the
// problems encoding/json would not report but that make a document mean
// different things to different readers: a key given twice (the validator
// would see the last value, json.Unmarshal every one), a number no
// float64 holds (or whose exponent would cost the validator seconds), and
// a NUL character in a string, which SQLite keeps but PostgreSQL's text
// refuses, so a document that holds one is refused here, whatever its
// schema, rather than by a store later.
func parse(data []byte) (any, []problem, error) {
	if !json.Valid(data) {
		var v any
		err := json.Unmarshal(data, &v)
		var serr *json.SyntaxError
		if errors.As(err, &serr) {
			return nil, nil, &SyntaxError{Offset: serr.Offset, Msg: serr.Error()}
		}
		return nil, nil, &SyntaxError{Msg: fmt.Sprint(err)}
	}
	// data is valid JSON as encoding/json reads it. jsontext (the
	// encoding/json/v2 tokenizer) reads it the same way once duplicate
	// names and invalid UTF-8 (mangled as U+FFFD, as encoding/json does)
	// are allowed, and about three times as fast as json.Decoder's Token.
	dec := jsontext.NewDecoder(bytes.NewReader(data), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	var probs []problem
	v, err := readValue(dec, nil, &probs)
	if err != nil {
		return nil, nil, &SyntaxError{Offset: dec.InputOffset(), Msg: err.Error()}
	}
	return v, probs, nil
}

// readValue reads the next value of dec, which holds valid JSON (so nesting
// is bounded by the decoder's depth limit), as encoding/json decodes it into
// an any, with numbers kept as json.Number.
func readValue(dec *jsontext.Decoder, loc []string, probs *[]problem) (any, error) {
	tok, err := dec.ReadToken()
	if err != nil {
		return nil, err
	}
	switch tok.Kind() {
	case '{':
		obj := map[string]any{}
		for dec.PeekKind() != '}' {
			kt, err := dec.ReadToken()
			if err != nil {
				return nil, err
			}
			key := kt.String()
			if strings.ContainsRune(key, 0) {
				*probs = append(*probs, problem{loc: slices.Clone(loc), msg: "has a name with a NUL character (\\u0000)"})
			}
			// loc's array is reused by siblings: a problem keeps a clone.
			at := append(loc, key)
			v, err := readValue(dec, at, probs)
			if err != nil {
				return nil, err
			}
			if _, dup := obj[key]; dup {
				*probs = append(*probs, problem{loc: slices.Clone(at), msg: "appears more than once"})
			}
			obj[key] = v
		}
		_, err := dec.ReadToken()
		return obj, err
	case '[':
		arr := []any{}
		for dec.PeekKind() != ']' {
			v, err := readValue(dec, append(loc, strconv.Itoa(len(arr))), probs)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		_, err := dec.ReadToken()
		return arr, err
	case '"':
		str := tok.String()
		if strings.ContainsRune(str, 0) {
			*probs = append(*probs, problem{loc: slices.Clone(loc), msg: "contains a NUL character (\\u0000), not allowed in text"})
		}
		return str, nil
	case '0':
		n := tok.String()
		if !numberInRange(n) {
			*probs = append(*probs, problem{loc: slices.Clone(loc), msg: "is out of range"})
		}
		return json.Number(n), nil
	case 't':
		return true, nil
	case 'f':
		return false, nil
	case 'n':
		return nil, nil
	}
	return nil, fmt.Errorf("unexpected %v", tok)
}

func numberInRange(s string) bool {
	if _, err := strconv.ParseFloat(s, 64); err != nil {
		return false
	}
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		exp, err := strconv.Atoi(strings.TrimPrefix(s[i+1:], "+"))
		if err != nil || exp < -400 || exp > 400 {
			return false
		}
	}
	return true
}

// schemaSet is every schema, compiled once.
type schemaSet struct {
	raw      map[string][]byte             // by name
	docs     map[string]any                // parsed, by $id
	compiled map[string]*jsonschema.Schema // by name, documents only
}

// set compiles the embedded schemas on first use. An embedded schema that
// does not compile is a bug of this package, caught by its tests, so it
// panics.
var set = sync.OnceValue(func() *schemaSet {
	s, err := compile()
	if err != nil {
		panic(err)
	}
	return s
})

func compile() (*schemaSet, error) {
	s := &schemaSet{
		raw:      map[string][]byte{},
		docs:     map[string]any{},
		compiled: map[string]*jsonschema.Schema{},
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.AssertContent()
	c.RegisterFormat(&jsonschema.Format{Name: "int64", Validate: intFormat(64, true)})
	c.RegisterFormat(&jsonschema.Format{Name: "uint64", Validate: intFormat(64, false)})

	entries, err := files.ReadDir("json")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		b, err := files.ReadFile("json/" + e.Name())
		if err != nil {
			return nil, err
		}
		name := strings.TrimSuffix(e.Name(), path.Ext(e.Name()))
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
		id := BaseURL + name + ".json"
		if got, _ := doc.(map[string]any)["$id"].(string); got != id {
			return nil, fmt.Errorf("schema %s: $id is %q, want %q", name, got, id)
		}
		if err := c.AddResource(id, doc); err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
		s.raw[name] = b
		s.docs[id] = doc
	}
	for _, name := range names {
		if s.raw[name] == nil {
			return nil, fmt.Errorf("schema %s: no file json/%s.json", name, name)
		}
		sch, err := c.Compile(BaseURL + name + ".json")
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
		s.compiled[name] = sch
	}
	if _, err := c.Compile(BaseURL + commonName + ".json"); err != nil {
		return nil, fmt.Errorf("schema %s: %w", commonName, err)
	}
	if len(s.raw) != len(names)+1 {
		return nil, fmt.Errorf("schemas: %d files embedded, want %d", len(s.raw), len(names)+1)
	}
	return s, nil
}

// intFormat asserts that a number is written as a Go integer of the given
// size reads it: digits only, no fraction or exponent, and in range, so that
// whatever Validate accepts also unmarshals.
func intFormat(bits int, signed bool) func(any) error {
	return func(v any) error {
		n, ok := v.(json.Number)
		if !ok {
			return nil
		}
		var err error
		if signed {
			_, err = strconv.ParseInt(string(n), 10, bits)
		} else {
			_, err = strconv.ParseUint(string(n), 10, bits)
		}
		if err != nil {
			return errors.New("not a whole number in range")
		}
		return nil
	}
}
