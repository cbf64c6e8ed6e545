package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/google/go-github/v60/github"
)

// shape is the part of a payload ekaci reads: for an object, the fields
// it reads and their shapes; for a leaf, the JSON kind it must have
// (kindString, kindNumber, kindBool). items is an array's element shape.
type shape struct {
	fields map[string]*shape
	items  *shape
	kind   byte
}

const (
	kindObject = 'o'
	kindArray  = 'a'
	kindString = 's'
	kindNumber = 'n'
	kindBool   = 'b'
)

func obj(fields map[string]*shape) *shape { return &shape{kind: kindObject, fields: fields} }
func arr(items *shape) *shape             { return &shape{kind: kindArray, items: items} }

var (
	str = &shape{kind: kindString}
	num = &shape{kind: kindNumber}
	boo = &shape{kind: kindBool}
)

// merge returns the union of two object shapes.
func merge(a, b map[string]*shape) map[string]*shape {
	out := map[string]*shape{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

var (
	commitRef = obj(map[string]*shape{"sha": str, "ref": str,
		"repo": obj(map[string]*shape{"full_name": str, "clone_url": str})})
	prShape = obj(map[string]*shape{"number": num, "draft": boo, "html_url": str, "state": str, "head": commitRef, "base": commitRef,
		"user": obj(map[string]*shape{"login": str}), "author_association": str})
	common = map[string]*shape{
		"action":       str,
		"installation": obj(map[string]*shape{"id": num, "account": obj(map[string]*shape{"login": str})}),
		"repository": obj(map[string]*shape{"full_name": str, "name": str, "clone_url": str, "default_branch": str,
			"private": boo, "owner": obj(map[string]*shape{"login": str})}),
		"sender": obj(map[string]*shape{"login": str}),
	}
	suiteShape = obj(map[string]*shape{"id": num, "head_sha": str, "head_branch": str, "pull_requests": arr(prShape)})
	repoList   = arr(obj(map[string]*shape{"full_name": str}))
	// shapes lists, per X-GitHub-Event, what ekaci reads of it. An event
	// not listed is answered 204 without being parsed.
	shapes = map[string]*shape{
		"ping":         obj(map[string]*shape{"zen": str, "hook_id": num}),
		"pull_request": obj(merge(common, map[string]*shape{"number": num, "pull_request": prShape, "before": str, "after": str})),
		"push": obj(merge(common, map[string]*shape{"ref": str, "before": str, "after": str, "deleted": boo, "created": boo,
			"head_commit": obj(map[string]*shape{"id": str})})),
		"check_run": obj(merge(common, map[string]*shape{
			"check_run": obj(map[string]*shape{"id": num, "name": str, "head_sha": str, "external_id": str,
				"check_suite": suiteShape, "pull_requests": arr(prShape)}),
			"requested_action": obj(map[string]*shape{"identifier": str})})),
		"check_suite":  obj(merge(common, map[string]*shape{"check_suite": suiteShape})),
		"merge_group":  obj(merge(common, map[string]*shape{"merge_group": obj(map[string]*shape{"head_sha": str, "head_ref": str, "base_sha": str, "base_ref": str})})),
		"installation": obj(merge(common, map[string]*shape{"repositories": repoList, "installation": obj(map[string]*shape{"id": num, "repository_selection": str, "account": obj(map[string]*shape{"login": str})})})),
		"installation_repositories": obj(merge(common, map[string]*shape{"repository_selection": str,
			"repositories_added": repoList, "repositories_removed": repoList})),
	}
)

// prune keeps only what s describes, in the kind s wants: anything else
// (fields ekaci does not read, nulls, a value of an unexpected kind) is
// dropped, so a payload is never refused for the shape of something ekaci
// does not use.
func prune(v any, s *shape) (any, bool) {
	switch s.kind {
	case kindObject:
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		out := map[string]any{}
		for k, fs := range s.fields {
			if pv, ok := prune(m[k], fs); ok {
				out[k] = pv
			}
		}
		return out, true
	case kindArray:
		a, ok := v.([]any)
		if !ok {
			return nil, false
		}
		out := make([]any, 0, len(a))
		for _, e := range a {
			if pe, ok := prune(e, s.items); ok {
				out = append(out, pe)
			}
		}
		return out, true
	case kindString:
		_, ok := v.(string)
		return v, ok
	case kindNumber: // ids and numbers: whole and within int64, as go-github reads them
		n, ok := v.(json.Number)
		if !ok {
			return nil, false
		}
		_, err := strconv.ParseInt(string(n), 10, 64)
		return v, err == nil
	case kindBool:
		_, ok := v.(bool)
		return v, ok
	}
	return nil, false
}

// errNotJSON means a body is not a JSON object at all.
var errNotJSON = fmt.Errorf("payload is not a JSON object")

// Parse decodes the parts of a delivery of event ekaci reads into
// go-github's type for it. It returns nil, nil for an event ekaci does not
// handle; an error only when the body is not a JSON object.
func Parse(event string, body []byte) (any, error) {
	s, ok := shapes[event]
	if !ok {
		return nil, nil
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: %w", errNotJSON, err)
	}
	pruned, ok := prune(v, s)
	if !ok {
		return nil, errNotJSON
	}
	clean, err := json.Marshal(pruned)
	if err != nil {
		return nil, fmt.Errorf("re-encode %s payload: %w", event, err)
	}
	out, err := github.ParseWebHook(event, clean)
	if err != nil {
		return nil, fmt.Errorf("%s payload: %w", event, err)
	}
	return out, nil
}
