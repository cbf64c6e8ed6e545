package eventlog_test

import (
	"testing"

	"github.com/ekaci/ekaci/libs/eventlog"
	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
)

func TestParseBuildSubject(t *testing.T) {
	tests := []struct {
		name          string
		subject       string
		system, class string
		ok            bool
	}{
		{"local", eventlog.BuildSubject("x86_64-linux", workv1.BuildClass_BUILD_CLASS_LOCAL), "x86_64-linux", "local", true},
		{"remote", eventlog.BuildSubject("aarch64-darwin", workv1.BuildClass_BUILD_CLASS_REMOTE), "aarch64-darwin", "remote", true},
		{"a report", eventlog.ReportSubject("abc"), "", "", false},
		{"one token", "ekaci.work.build.x86_64-linux", "", "", false},
		{"three tokens", "ekaci.work.build.x86_64-linux.local.extra", "", "", false},
		{"empty system", "ekaci.work.build..local", "", "", false},
		{"another stream", "ekaci.log.abc.1", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			system, class, ok := eventlog.ParseBuildSubject(tt.subject)
			if system != tt.system || class != tt.class || ok != tt.ok {
				t.Errorf("ParseBuildSubject(%q) = %q, %q, %v; want %q, %q, %v", tt.subject, system, class, ok, tt.system, tt.class, tt.ok)
			}
		})
	}
	if !matches(eventlog.BuildsFilter, eventlog.BuildSubject("x86_64-linux", workv1.BuildClass_BUILD_CLASS_FOD)) {
		t.Errorf("BuildsFilter %s does not match a build subject", eventlog.BuildsFilter)
	}
}

// matches reports whether a NATS filter ending in ">" matches subject.
func matches(filter, subject string) bool {
	prefix := filter[:len(filter)-1]
	return len(subject) > len(prefix) && subject[:len(prefix)] == prefix
}
