package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzValidateSubmission checks that Validate never panics, that every error
// it returns for a submission is the payload's fault, and that whatever it
// accepts unmarshals into a Submission that validates again once marshalled.
func FuzzValidateSubmission(f *testing.F) {
	addSeeds(f, "testdata/good/submission/*.json", "testdata/bad/submission/*.json")
	f.Fuzz(func(t *testing.T, data []byte) {
		err := Validate(SchemaSubmission, data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not match ErrInvalid: %v", err)
			}
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		var sub Submission
		if err := json.Unmarshal(data, &sub); err != nil {
			t.Fatalf("accepted %q but it does not unmarshal: %v", data, err)
		}
		again, err := json.Marshal(sub)
		if err != nil {
			t.Fatal(err)
		}
		if err := Validate(SchemaSubmission, again); err != nil {
			t.Fatalf("accepted %q but not its round trip %q: %v", data, again, err)
		}
	})
}

// FuzzDecodeMessages feeds the same bytes to every message a consumer
// decodes (task, review request, event, decision, dead-letter action):
// decoding never panics, every refusal is ErrInvalid with a message, and
// what is accepted round-trips through its Go type.
func FuzzDecodeMessages(f *testing.F) {
	addSeeds(f, "testdata/good/*/*.json", "testdata/bad/task/*.json", "testdata/bad/review_request/*.json", "testdata/bad/event/*.json")
	check := func(t *testing.T, schema string, data []byte, decode func([]byte) (any, error)) {
		v, err := decode(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || err.Error() == "" {
				t.Fatalf("%s: error %v is not a described ErrInvalid", schema, err)
			}
			return
		}
		again, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%s: accepted %q but cannot marshal it: %v", schema, data, err)
		}
		if err := Validate(schema, again); err != nil {
			t.Fatalf("%s: accepted %q but not its round trip %s: %v", schema, data, again, err)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		check(t, SchemaTask, data, func(b []byte) (any, error) { return Decode[TaskMessage](SchemaTask, b) })
		check(t, SchemaReviewRequest, data, func(b []byte) (any, error) { return Decode[ReviewRequest](SchemaReviewRequest, b) })
		check(t, SchemaEvent, data, func(b []byte) (any, error) { return Decode[Event](SchemaEvent, b) })
		check(t, SchemaReviewDecision, data, func(b []byte) (any, error) { return Decode[ReviewDecision](SchemaReviewDecision, b) })
		check(t, SchemaDeadLetterAction, data, func(b []byte) (any, error) { return Decode[DeadLetterAction](SchemaDeadLetterAction, b) })
	})
}

// FuzzParseReadsAsEncodingJSON: what the validator sees is what
// encoding/json decodes (numbers as json.Number), for every valid document:
// invalid UTF-8 and lone surrogates mangled alike, the last of duplicate
// names kept.
func FuzzParseReadsAsEncodingJSON(f *testing.F) {
	addSeeds(f, "testdata/*/*/*.json")
	for _, s := range []string{"\"a\xff\xfeb\"", `"\ud800x"`, `"\udc00\ud800"`, "\"\xed\xa0\x80\"", `{"a":1,"a":[2,{"b":null}]}`, `[1e400, -0, 1.50, 12345678901234567890]`, ` {"é\u0000":"\n"} `} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) {
			return
		}
		got, _, err := parse(data)
		if err != nil {
			t.Fatalf("parse %q: %v", data, err)
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var want any
		if err := dec.Decode(&want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(want, got) {
			t.Fatalf("parse %q:\n got %#v\nwant %#v", data, got, want)
		}
	})
}

// addSeeds adds every file the patterns match to f's corpus.
func addSeeds(f *testing.F, patterns ...string) {
	f.Helper()
	for _, pattern := range patterns {
		seeds, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		for _, seed := range seeds {
			data, err := os.ReadFile(seed)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
}
