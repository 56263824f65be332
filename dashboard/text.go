package dashboard

import (
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// refuseNUL answers 400, naming the field, to a request whose path, query or
// form holds a NUL character (%00): the pages pass them to the store, and
// PostgreSQL's text cannot hold one (the API refuses it likewise).
func refuseNUL(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		field := ""
		if strings.ContainsRune(r.URL.Path, 0) {
			field = "path"
		} else if field = nulField(r.URL.Query()); field == "" && r.Method == http.MethodPost {
			if err := r.ParseForm(); err == nil {
				field = nulField(r.PostForm)
			}
		}
		if field != "" {
			http.Error(w, field+`: contains a NUL character (\u0000), not allowed in text`, http.StatusBadRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// nulField returns the first field, in name order, whose name or a value
// holds a NUL, or "".
func nulField(v url.Values) string {
	for _, name := range slices.Sorted(maps.Keys(v)) {
		if strings.ContainsRune(name, 0) {
			return "a field name"
		}
		if slices.ContainsFunc(v[name], func(s string) bool { return strings.ContainsRune(s, 0) }) {
			return name
		}
	}
	return ""
}
