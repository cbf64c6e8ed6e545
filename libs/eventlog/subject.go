package eventlog

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"

	eventsv1 "github.com/ekaci/ekaci/libs/gen/ekaci/events/v1"
)

// Aggregates, as the first token after ekaci.evt.
const (
	Change = "change"
	Jobset = "jobset"
	Drv    = "drv"
	Check  = "check"
	// GitHub holds what GitHub told ekaci about its App installations;
	// the aggregate id is the installation id.
	GitHub = "github"
	// Contributor holds the approvals operators give and revoke; the
	// aggregate id is ContributorID of the GitHub login.
	Contributor = "contributor"
	// Builder holds the drains and resumes operators ask of a builder; the
	// aggregate id is BuilderID of its name.
	Builder = "builder"
)

var aggregates = []string{Change, Jobset, Drv, Check, GitHub, Contributor, Builder}

// ValidToken reports whether s may be used as a subject token: 1 to 128
// of A-Z, a-z, 0-9, '_' and '-'. (A loop, not a regexp: every append
// checks its aggregate id.)
func ValidToken(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Address returns an event's aggregate and fact names from its payload's
// oneof field: drv_build_succeeded is aggregate "drv", fact "build_succeeded".
func Address(ev *eventsv1.Event) (aggregate, fact string, err error) {
	fd := payloadField(ev)
	if fd == nil {
		return "", "", fmt.Errorf("%w: event %q has no payload", ErrBadEvent, ev.GetId())
	}
	name := string(fd.Name())
	for _, a := range aggregates {
		if rest, ok := strings.CutPrefix(name, a+"_"); ok {
			return a, rest, nil
		}
	}
	return "", "", fmt.Errorf("%w: payload %s names no aggregate", ErrBadEvent, name)
}

// TypeName is the payload's full protobuf name, e.g.
// ekaci.events.v1.DrvBuildSucceeded; it is the Ekaci-Event-Type header.
func TypeName(ev *eventsv1.Event) string {
	fd := payloadField(ev)
	if fd == nil {
		return ""
	}
	return string(fd.Message().FullName())
}

func payloadField(ev *eventsv1.Event) protoreflect.FieldDescriptor {
	m := ev.ProtoReflect()
	od := m.Descriptor().Oneofs().ByName("payload")
	return m.WhichOneof(od)
}

// Subject is where a fact about one aggregate is appended.
func Subject(aggregate, id, fact string) string {
	return EventsRoot + "." + aggregate + "." + id + "." + fact
}

// AggregateFilter matches every fact of one aggregate.
func AggregateFilter(aggregate, id string) string {
	return EventsRoot + "." + aggregate + "." + id + ".*"
}

// FactFilter matches one fact of every aggregate of a kind, e.g.
// ekaci.evt.drv.*.buildable.
func FactFilter(aggregate, fact string) string {
	return EventsRoot + "." + aggregate + ".*." + fact
}

// KindFilter matches every fact of every aggregate of a kind.
func KindFilter(aggregate string) string {
	return EventsRoot + "." + aggregate + ".>"
}

// parseSubject splits ekaci.evt.<aggregate>.<id>.<fact>.
func parseSubject(subject string) (aggregate, id, fact string, ok bool) {
	parts := strings.Split(subject, ".")
	if len(parts) != 5 || parts[0]+"."+parts[1] != EventsRoot {
		return "", "", "", false
	}
	return parts[2], parts[3], parts[4], true
}
