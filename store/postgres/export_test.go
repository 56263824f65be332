package postgres

import "time"

// SetCommitPatience sets how long a commit waits before it asks the server
// to cancel, until the test ends. Only tests that are not parallel may
// call it: every store of the package reads it.
func SetCommitPatience(d time.Duration) (restore func()) {
	was := commitPatience
	commitPatience = d
	return func() { commitPatience = was }
}

// GroupSenders is how many groups of write-only transactions may be on
// their way at once.
const GroupSenders = groupSenders

// GroupQueued is how many write-only transactions of s wait for a sender.
func GroupQueued(s *Store) int { return len(s.group.in) }
