package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
		case "/slow":
			time.Sleep(300 * time.Millisecond)
		default:
			http.Error(w, "not current with the meta leader", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	for _, tc := range []struct {
		name    string
		url     string
		timeout time.Duration
		ok      bool
	}{
		{"200", srv.URL + "/ok", time.Second, true},
		{"503", srv.URL + "/down", time.Second, false},
		{"too slow", srv.URL + "/slow", 50 * time.Millisecond, false},
		{"nothing listening", "http://127.0.0.1:1/healthz", time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := probe(tc.url, tc.timeout)
			if (err == nil) != tc.ok {
				t.Fatalf("probe(%s) = %v, want ok=%v", tc.url, err, tc.ok)
			}
		})
	}
}
