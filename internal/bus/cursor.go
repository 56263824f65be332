package bus

import (
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// EncodeCursor makes an opaque page cursor from the last row of a page.
func EncodeCursor(t time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(t.UnixMicro(), 10) + "|" + id))
}

// DecodeCursor reads a cursor EncodeCursor made.
func DecodeCursor(c string) (time.Time, string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", errors.New("not a cursor this api returned")
	}
	us, id, ok := strings.Cut(string(raw), "|")
	n, err := strconv.ParseInt(us, 10, 64)
	if !ok || err != nil {
		return time.Time{}, "", errors.New("not a cursor this api returned")
	}
	return time.UnixMicro(n).UTC(), id, nil
}
