package eventlog

import (
	"fmt"
	"strings"

	workv1 "github.com/ekaci/ekaci/libs/gen/ekaci/work/v1"
)

// ClassToken is the subject token of a build class.
func ClassToken(c workv1.BuildClass) string {
	switch c {
	case workv1.BuildClass_BUILD_CLASS_LOCAL:
		return "local"
	case workv1.BuildClass_BUILD_CLASS_FOD:
		return "fod"
	case workv1.BuildClass_BUILD_CLASS_REMOTE:
		return "remote"
	}
	return "unspecified"
}

// BuildSubject is where build requests for a system and class wait.
func BuildSubject(system string, c workv1.BuildClass) string {
	return WorkRoot + ".build." + SystemToken(system) + "." + ClassToken(c)
}

// BuildsFilter matches every build request, of every system and class.
const BuildsFilter = WorkRoot + ".build.>"

// ParseBuildSubject reads the system and class tokens of a subject made by
// BuildSubject; ok is false for any other subject.
func ParseBuildSubject(subject string) (system, class string, ok bool) {
	rest, found := strings.CutPrefix(subject, WorkRoot+".build.")
	if !found {
		return "", "", false
	}
	system, class, ok = strings.Cut(rest, ".")
	if !ok || system == "" || class == "" || strings.Contains(class, ".") {
		return "", "", false
	}
	return system, class, true
}

// ReportsFilter matches every builder report.
const ReportsFilter = WorkRoot + ".report.>"

// ReportSubject is where a builder reports on a derivation.
func ReportSubject(drvID string) string { return WorkRoot + ".report." + drvID }

// LogSubject carries the live log lines of one build attempt.
func LogSubject(drvID string, attempt uint32) string {
	return fmt.Sprintf("%s.%s.%d", LogsRoot, drvID, attempt)
}
