package schemas_test

import (
	"errors"
	"fmt"

	"github.com/troupe-dev/troupe/schemas"
)

// A submission with a typo in a field name and an unknown role is rejected
// with an error that names each field, ready for an error reply.
func ExampleValidate() {
	payload := []byte(`{
		"titel": "Per-key rate limiting",
		"tasks": [{"key": "prd", "role": "pm"}, {"key": "spells", "role": "wizard"}]
	}`)

	err := schemas.Validate(schemas.SchemaSubmission, payload)
	fmt.Println(errors.Is(err, schemas.ErrInvalid))
	fmt.Println(err)

	var verr *schemas.ValidationError
	if errors.As(err, &verr) {
		for _, p := range verr.Problems {
			fmt.Printf("%s -> %s\n", p.Field, p.Message)
		}
	}
	// Output:
	// true
	// tasks[1].role: "wizard" is not one of pm, architect, developer, tester, writer, devops; titel: is not a known field (did you mean title?); title: is required
	// tasks[1].role -> "wizard" is not one of pm, architect, developer, tester, writer, devops
	// titel -> is not a known field (did you mean title?)
	// title -> is required
}

// Decode validates, then unmarshals.
func ExampleDecode() {
	sub, err := schemas.Decode[schemas.Submission](schemas.SchemaSubmission,
		[]byte(`{"title": "Write a haiku", "budget": {"max_tokens": 5000}}`))
	fmt.Println(sub.Title, sub.Budget.MaxTokens, err)

	_, err = schemas.Decode[schemas.Submission](schemas.SchemaSubmission, []byte(`{"title": "x",}`))
	fmt.Println(err)
	// Output:
	// Write a haiku 5000 <nil>
	// invalid JSON at offset 15: invalid character '}' looking for beginning of object key string
}
