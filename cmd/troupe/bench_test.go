package main

import "testing"

func TestPGLocal(t *testing.T) {
	for url, want := range map[string]bool{
		"postgres://u@127.0.0.1:5432/db":              true,
		"postgres://u@localhost/db":                   true,
		"postgres://u@[::1]:5432/db":                  true,
		"postgres://u@/db?host=/var/run/postgresql":   true,
		"host=127.0.0.1 user=u dbname=db":             true,
		"postgres://u@db.example.com:5432/db":         false,
		"postgres://u@10.0.0.5/db":                    false,
		"postgres://u@127.0.0.1:5432/db?sslmode=bad!": false, // does not parse
	} {
		if got := pgLocal(url); got != want {
			t.Errorf("pgLocal(%q) = %v, want %v", url, got, want)
		}
	}
}
