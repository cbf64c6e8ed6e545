package pbjson

import (
	"sync"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Marshaler is implemented by generated messages.
type Marshaler interface {
	MarshalProtoJSON(e *Encoder)
}

// Unmarshaler is implemented by generated messages.
type Unmarshaler interface {
	UnmarshalProtoJSON(d *Decoder)
}

var (
	slowMarshal   = protojson.MarshalOptions{UseProtoNames: true}
	slowUnmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}
)

// scratch holds encoders' buffers between calls: Marshal writes into one
// and returns an exact-size copy, one allocation per message instead of
// one per doubling.
var scratch = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// Marshal writes m as protojson with proto field names would.
func Marshal(m proto.Message) ([]byte, error) {
	if f, ok := m.(Marshaler); ok {
		bp := scratch.Get().(*[]byte)
		e := Encoder{buf: (*bp)[:0]}
		f.MarshalProtoJSON(&e)
		var out []byte
		if !e.bad {
			out = append([]byte(nil), e.buf...)
		}
		if cap(e.buf) <= 1<<20 { // a huge message's buffer is not kept
			*bp = e.buf
			scratch.Put(bp)
		}
		if out != nil {
			return out, nil
		}
	}
	return slowMarshal.Marshal(m)
}

// Unmarshal reads data into m as protojson with DiscardUnknown would,
// replacing what m held.
func Unmarshal(data []byte, m proto.Message) error {
	if u, ok := m.(Unmarshaler); ok {
		proto.Reset(m)
		d := Decoder{data: data}
		u.UnmarshalProtoJSON(&d)
		if d.finish() {
			return nil
		}
	}
	return slowUnmarshal.Unmarshal(data, m) // resets m too
}
