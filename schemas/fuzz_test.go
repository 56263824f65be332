package schemas

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzValidateSubmission checks that Validate never panics, that every error
// it returns for a submission is the payload's fault, and that whatever it
// accepts unmarshals into a Submission that validates again once marshalled.
func FuzzValidateSubmission(f *testing.F) {
	for _, pattern := range []string{"testdata/good/submission/*.json", "testdata/bad/submission/*.json"} {
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
