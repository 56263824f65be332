package orchestrator

import (
	"slices"
	"strings"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/schemas"
)

// DefaultPlan is the plan of a job that names no tasks: pm → architect →
// developer → {tester, writer, devops}.
func DefaultPlan() []schemas.PlanTask {
	return []schemas.PlanTask{
		{Key: "prd", Role: "pm", Instructions: "Write the product requirements: goals, users and numbered requirements."},
		{Key: "architecture", Role: "architect", Instructions: "Design the architecture that meets the PRD: components, data flow and decisions.", DependsOn: []string{"prd"}},
		{Key: "implementation", Role: "developer", Instructions: "Implement the architecture as code files, with implementation notes.", DependsOn: []string{"architecture"}},
		{Key: "tests", Role: "tester", Instructions: "Write a test plan and tests for the implementation.", DependsOn: []string{"implementation"}},
		{Key: "docs", Role: "writer", Instructions: "Write the user documentation for the implementation.", DependsOn: []string{"implementation"}},
		{Key: "deploy", Role: "devops", Instructions: "Write the deployment files and a runbook for the implementation.", DependsOn: []string{"implementation"}},
	}
}

// ValidatePlan checks what the schema cannot: unique keys, known roles,
// dependencies on keys that exist, and no cycle. Its errors name the task.
func ValidatePlan(tasks []schemas.PlanTask) error {
	index := make(map[string]int, len(tasks))
	for i, t := range tasks {
		if t.Key == "" {
			return bus.BadRequest("invalid_plan", "tasks[%d].key: is required", i)
		}
		if j, dup := index[t.Key]; dup {
			return bus.BadRequest("invalid_plan", "tasks[%d].key: %q is used by tasks[%d] too; keys must be unique", i, t.Key, j)
		}
		index[t.Key] = i
		if !schemas.IsRole(t.Role) {
			return bus.BadRequest("unknown_role", "tasks[%d].role: %q is not a role; the roles are %s", i, t.Role, strings.Join(schemas.Roles, ", "))
		}
	}
	for i, t := range tasks {
		for j, dep := range t.DependsOn {
			if dep == t.Key {
				return bus.BadRequest("invalid_plan", "tasks[%d].depends_on[%d]: task %q depends on itself", i, j, t.Key)
			}
			if _, ok := index[dep]; !ok {
				return bus.BadRequest("unknown_dependency", "tasks[%d].depends_on[%d]: no task has the key %q", i, j, dep)
			}
		}
	}
	if cycle := findCycle(tasks, index); cycle != nil {
		return bus.BadRequest("dependency_cycle", "tasks: dependency cycle %s (each task depends on the next)", strings.Join(cycle, " → "))
	}
	return nil
}

// findCycle returns the keys of one dependency cycle, first key repeated at
// the end, or nil.
func findCycle(tasks []schemas.PlanTask, index map[string]int) []string {
	const (
		unvisited = iota
		visiting
		done
	)
	state := make([]int, len(tasks))
	var stack []string
	var visit func(i int) []string
	visit = func(i int) []string {
		state[i] = visiting
		stack = append(stack, tasks[i].Key)
		for _, dep := range tasks[i].DependsOn {
			j := index[dep]
			switch state[j] {
			case visiting:
				start := slices.Index(stack, dep)
				return append(slices.Clone(stack[start:]), dep)
			case unvisited:
				if c := visit(j); c != nil {
					return c
				}
			}
		}
		stack = stack[:len(stack)-1]
		state[i] = done
		return nil
	}
	for i := range tasks {
		if state[i] == unvisited {
			if c := visit(i); c != nil {
				return c
			}
		}
	}
	return nil
}
