package review

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/troupe-dev/troupe/internal/bus"
	"github.com/troupe-dev/troupe/internal/secretscan"
	"github.com/troupe-dev/troupe/schemas"
)

// Lessons go into every later prompt of their scope, and skills become
// artifacts: both pass checks like an output's, whoever wrote them.

// maxLessonBytes bounds one lesson (the schemas bound it to 2000
// characters; this bounds the bytes they take).
const maxLessonBytes = 4000

// What is wrong with a lesson or a skill: the code of a person's 400.
const (
	problemSecret      = "secret_in_lesson"
	problemInstruction = "instruction_in_lesson"
	problemSize        = "lesson_too_large"
)

// memoryProblem is why a lesson or a skill may not be kept.
type memoryProblem struct {
	code   string
	detail string
}

// injectionPatterns flag text aimed at the model that reads it rather than
// at the work: overriding its instructions, changing its role, asking for
// its prompt, chat-template and role markers, and the delimiters the
// worker quotes lessons in. A lesson is advice about the work ("Always
// name the status codes"); none of these belongs in one.
var injectionPatterns = []*regexp.Regexp{
	regexp.MustCompile(`(?i)\b(?:ignore|disregard|forget|override|bypass)\b[^.\n]{0,30}\b(?:previous|prior|above|earlier|preceding|foregoing|initial|original|system|developer)\b[^.\n]{0,20}\b(?:instructions?|prompts?|rules|directions|messages|context)\b`),
	regexp.MustCompile(`(?i)\b(?:ignore|disregard|forget)\s+(?:all|everything)\s+(?:above|before|else)\b`),
	regexp.MustCompile(`(?i)\b(?:you are now|from now on,? you (?:are|must|will)|pretend (?:to be|you are)|act as (?:an? |the )?(?:unrestricted|jailbroken|dan)\b|new (?:system )?instructions?:|updated instructions?:|developer mode)`),
	regexp.MustCompile(`(?i)\b(?:reveal|repeat|print|output|show|leak|send)\b[^.\n]{0,30}\b(?:your|the) (?:system prompt|instructions|initial prompt|hidden prompt)\b`),
	regexp.MustCompile(`(?i)\bsystem prompt\b`),
	regexp.MustCompile(`(?i)<\|?\s*(?:im_start|im_end|endoftext|system|assistant|user)\s*\|?>|\[/?INST\]|<</?SYS>>`),
	regexp.MustCompile(`(?im)^\s*#*\s*(?:system|assistant)\s*:`),
	regexp.MustCompile(`(?i)</?\s*lessons?\s*>`),
	regexp.MustCompile(`(?i)\b(?:do not|don't|never)\s+(?:tell|inform|mention|report|alert)\b[^.\n]{0,30}\b(?:reviewers?|humans?|operators?)\b`),
}

// instructionProblem says what in text reads as an instruction to a model,
// or "".
func instructionProblem(text string) string {
	for _, re := range injectionPatterns {
		if m := re.FindString(text); m != "" {
			return fmt.Sprintf("reads as an instruction to the model (%q), not a lesson about the work", bus.Clip(oneLine(m), 60))
		}
	}
	return ""
}

// secretsProblem says where and of what kind the secrets in text are, or "".
func secretsProblem(s *secretscan.Scanner, path, text string) string {
	found := s.Scan(path, text)
	if len(found) == 0 {
		return ""
	}
	parts := make([]string, 0, len(found))
	for i, f := range found {
		if i == maxProblems {
			parts = append(parts, fmt.Sprintf("and %d more", len(found)-i))
			break
		}
		parts = append(parts, fmt.Sprintf("line %d: %s", f.Line, f.Kind))
	}
	return "looks like a secret (" + strings.Join(parts, "; ") + ")"
}

// lessonProblem is why a lesson may not go to MEMORY: a secret, its size,
// or an instruction aimed at the model. The zero value means none.
func lessonProblem(s *secretscan.Scanner, text string) memoryProblem {
	if d := secretsProblem(s, "", text); d != "" {
		return memoryProblem{problemSecret, d}
	}
	if len(text) > maxLessonBytes {
		return memoryProblem{problemSize, fmt.Sprintf("is %d bytes, more than the limit of %d", len(text), maxLessonBytes)}
	}
	if d := instructionProblem(text); d != "" {
		return memoryProblem{problemInstruction, d}
	}
	return memoryProblem{}
}

// skillProblem is why a skill may not be promoted, or "".
func skillProblem(s *secretscan.Scanner, skill *schemas.Skill, limits Limits) string {
	if skill == nil {
		return ""
	}
	path := "skills/" + skill.Name + "/SKILL.md"
	if d := secretsProblem(s, path, skill.Content); d != "" {
		return d
	}
	if len(skill.Content) > limits.MaxFileBytes {
		return fmt.Sprintf("is %d bytes, more than the limit of %d", len(skill.Content), limits.MaxFileBytes)
	}
	return instructionProblem(skill.Content)
}

// checkLessonsOf refuses a person's lessons that may not go to MEMORY, with
// a 400 naming the first one and why.
func checkLessonsOf(s *secretscan.Scanner, lessons []schemas.Lesson) error {
	for i, l := range lessons {
		if p := lessonProblem(s, l.Text); p.code != "" {
			return bus.BadRequest(p.code, "lessons[%d].text: %s; lessons are sent to models in later prompts", i, p.detail)
		}
	}
	return nil
}

// screenModelReview drops what a model reviewer proposed for MEMORY or
// skills/ that may not be kept, and says what it dropped and why ("" when
// nothing).
func screenModelReview(s *secretscan.Scanner, mr *schemas.ModelReview, limits Limits) string {
	var dropped []string
	kept := mr.Lessons[:0:0]
	for i, l := range mr.Lessons {
		if p := lessonProblem(s, l.Text); p.code != "" {
			dropped = append(dropped, fmt.Sprintf("lesson %d %s", i+1, p.detail))
			continue
		}
		kept = append(kept, l)
	}
	mr.Lessons = kept
	if d := skillProblem(s, mr.Skill, limits); d != "" {
		dropped = append(dropped, fmt.Sprintf("skill %q %s", mr.Skill.Name, d))
		mr.Skill = nil
	}
	return strings.Join(dropped, "; ")
}
