package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConfigHandler(t *testing.T) {
	cases := []struct {
		name, authURL, want string
	}{
		{"demo store", "", `{}`},
		{"auth service", "https://auth.example.com", `{"signInURL":"https://auth.example.com"}`},
		{"auth service on plain http", "http://127.0.0.1:3000/", `{"signInURL":"http://127.0.0.1:3000/"}`},
		{"a script URL is never a link", "javascript:alert(1)", `{}`},
		{"a relative URL is never a link", "//evil.example", `{}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			configHandler(tc.authURL).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/config", nil))
			require.Equal(t, http.StatusOK, rec.Code)
			assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
			body, _ := io.ReadAll(rec.Body)
			assert.JSONEq(t, tc.want, string(body))
		})
	}
}
