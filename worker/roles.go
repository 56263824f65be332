package worker

import (
	"embed"
	"fmt"
	"strings"

	"github.com/troupe-dev/troupe/schemas"
)

// rolePromptFiles holds each role's system prompt, roles/<role>.md, and the
// part every prompt shares, roles/_format.md: the workspace rules and the
// output format. They are files rather than Go strings so they read and
// diff as the prose they are.
//
//go:embed roles/*.md
var rolePromptFiles embed.FS

// rolePromptFormatFile is the shared part appended to every role's prompt.
const rolePromptFormatFile = "roles/_format.md"

// RolePrompt returns the system prompt of role for a real model: who the
// role is, the files it produces with their required `## ` headings (the
// ones review.RequiredSections checks), the rule "read shared, write
// isolated", and the output format, in which every file is a block opened by
// a line `=== FILE: <relative/path> ===` and closed by `=== END FILE ===`.
// An unknown role is an error naming it.
func RolePrompt(role string) (string, error) {
	if !schemas.IsRole(role) {
		return "", fmt.Errorf("no prompt for unknown role %q; the roles are %s", role, strings.Join(schemas.Roles, ", "))
	}
	own, err := rolePromptFiles.ReadFile("roles/" + role + ".md")
	if err != nil {
		return "", fmt.Errorf("reading prompt of role %q: %w", role, err)
	}
	shared, err := rolePromptFiles.ReadFile(rolePromptFormatFile)
	if err != nil {
		return "", fmt.Errorf("reading shared prompt: %w", err)
	}
	return strings.TrimSpace(string(own)) + "\n\n" + strings.TrimSpace(string(shared)) + "\n", nil
}
