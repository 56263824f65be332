package orchestrator

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
)

func TestValidatePlan(t *testing.T) {
	t.Parallel()
	pt := func(key, role string, deps ...string) schemas.PlanTask {
		return schemas.PlanTask{Key: key, Role: role, DependsOn: deps}
	}
	tests := []struct {
		name     string
		tasks    []schemas.PlanTask
		code     string
		wantText string
	}{
		{"default plan", DefaultPlan(), "", ""},
		{"one task", []schemas.PlanTask{pt("a", "pm")}, "", ""},
		{"diamond", []schemas.PlanTask{pt("a", "pm"), pt("b", "architect", "a"), pt("c", "writer", "a"), pt("d", "developer", "b", "c")}, "", ""},
		{"duplicate key", []schemas.PlanTask{pt("a", "pm"), pt("a", "writer")}, "invalid_plan", `tasks[1].key: "a" is used by tasks[0] too`},
		{"unknown role", []schemas.PlanTask{pt("a", "wizard")}, "unknown_role", `tasks[0].role: "wizard" is not a role`},
		{"self dependency", []schemas.PlanTask{pt("a", "pm", "a")}, "invalid_plan", `tasks[0].depends_on[0]: task "a" depends on itself`},
		{"unknown dependency", []schemas.PlanTask{pt("a", "pm"), pt("b", "pm", "a", "zz")}, "unknown_dependency", `tasks[1].depends_on[1]: no task has the key "zz"`},
		{"two-cycle", []schemas.PlanTask{pt("a", "pm", "b"), pt("b", "pm", "a")}, "dependency_cycle", "a → b → a"},
		{"cycle behind a chain", []schemas.PlanTask{pt("x", "pm"), pt("a", "pm", "x", "c"), pt("b", "pm", "a"), pt("c", "pm", "b")}, "dependency_cycle", "a → c → b → a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := ValidatePlan(tt.tasks)
			if tt.code == "" {
				require.NoError(t, err)
				return
			}
			var apiErr *bus.APIError
			require.ErrorAs(t, err, &apiErr)
			require.Equal(t, tt.code, apiErr.Code)
			require.Contains(t, apiErr.Message, tt.wantText)
		})
	}
}

func TestDefaultPlanShape(t *testing.T) {
	t.Parallel()
	deps := map[string][]string{}
	roles := map[string]bool{}
	for _, task := range DefaultPlan() {
		deps[task.Key] = task.DependsOn
		roles[task.Role] = true
	}
	require.Len(t, roles, len(schemas.Roles), "one task per role")
	require.Empty(t, deps["prd"])
	require.Equal(t, []string{"prd"}, deps["architecture"])
	require.Equal(t, []string{"architecture"}, deps["implementation"])
	for _, k := range []string{"tests", "docs", "deploy"} {
		require.Equal(t, []string{"implementation"}, deps[k], k)
	}
}
