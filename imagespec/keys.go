package imagespec

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
)

// scan reads a spec document's tokens once, before it is decoded, for what
// encoding/json lets pass: it matches object keys to fields ignoring case,
// and of two equal keys the last wins, so {"closure": A, "Closure": B} is B
// to Go and A to Nix (or a person reading it). Scan refuses both: a key
// that matches a field of t only when case is ignored, and a key that
// appears twice in one object. Keys that match no field (Nix's own
// .attrs.json entries: builder, args, outputs, …) are let through.
//
// It returns the raw "version" value ("" when absent), read before any
// other problem is reported so that a future document gets a version error.
func scan(data []byte, t reflect.Type) (version string, keyErr error, err error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return "", nil, &Error{Msg: "not a JSON object: " + err.Error()}
	}
	if tok != json.Delim('{') {
		return "", nil, &Error{Msg: fmt.Sprintf("not a JSON object: the document starts with %v", tok)}
	}
	s := &scanner{dec: dec}
	if err := s.object(t, "", true); err != nil {
		return "", nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return "", nil, &Error{Msg: "not a JSON object: data after the document"}
	}
	return s.version, s.keyErr, nil
}

type scanner struct {
	dec     *json.Decoder
	version string
	keyErr  error // the first key problem
}

func syntaxError(field string, err error) error {
	if field == "" {
		return &Error{Msg: "not a JSON object: " + err.Error()}
	}
	return &Error{Field: field, Msg: "malformed JSON: " + err.Error()}
}

// jsonKind names what a Go type holds in JSON words.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return "number"
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Map, reflect.Struct:
		return "object"
	}
	return t.String()
}

func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}

func (s *scanner) keyError(field, format string, args ...any) {
	if s.keyErr == nil {
		s.keyErr = errf(field, format, args...)
	}
}

// object reads an object's members after its '{'; t is the Go type it
// decodes into (nil: anything).
func (s *scanner) object(t reflect.Type, field string, top bool) error {
	fields := fieldsOf(t)
	seen := map[string]bool{}
	for s.dec.More() {
		tok, err := s.dec.Token()
		if err != nil {
			return syntaxError(field, err)
		}
		key := tok.(string)
		f := join(field, key)
		if seen[key] {
			s.keyError(f, "appears twice in one object")
		}
		seen[key] = true
		var vt reflect.Type
		switch {
		case t != nil && t.Kind() == reflect.Map:
			vt = t.Elem()
		case fields != nil:
			if ft, ok := fields[key]; ok {
				vt = ft
			} else {
				for name := range fields {
					if strings.EqualFold(name, key) {
						s.keyError(f, "unknown key; keys are case-sensitive: did you mean %q?", name)
					}
				}
			}
		}
		if top && key == "version" {
			tok, err := s.dec.Token()
			if err != nil {
				return syntaxError(f, err)
			}
			switch v := tok.(type) {
			case json.Number:
				s.version = v.String()
			case json.Delim:
				s.version = "(not a number)"
				if err := s.rest(v, nil, f); err != nil {
					return err
				}
			default:
				s.version = "(not a number)"
			}
			continue
		}
		if err := s.value(vt, f); err != nil {
			return err
		}
	}
	_, err := s.dec.Token() // '}'
	if err != nil {
		return syntaxError(field, err)
	}
	return nil
}

// value reads one value that decodes into t (nil: anything).
func (s *scanner) value(t reflect.Type, field string) error {
	tok, err := s.dec.Token()
	if err != nil {
		return syntaxError(field, err)
	}
	if d, ok := tok.(json.Delim); ok {
		return s.rest(d, t, field)
	}
	return nil
}

// rest reads the rest of an object or array after its opening delimiter.
func (s *scanner) rest(d json.Delim, t reflect.Type, field string) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && custom(t) {
		t = nil // its own UnmarshalJSON decides what its keys mean
	}
	switch d {
	case '{':
		return s.object(t, field, false)
	case '[':
		var et reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			et = t.Elem()
		}
		for i := 0; s.dec.More(); i++ {
			if err := s.value(et, fmt.Sprintf("%s[%d]", field, i)); err != nil {
				return err
			}
		}
		_, err := s.dec.Token() // ']'
		if err != nil {
			return syntaxError(field, err)
		}
	}
	return nil
}

var (
	unmarshalerType     = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func custom(t reflect.Type) bool {
	p := reflect.PointerTo(t)
	return p.Implements(unmarshalerType) || p.Implements(textUnmarshalerType)
}

// fieldsOf maps the JSON names of a struct's fields (embedded structs'
// promoted, as encoding/json does) to their types; nil if t is no struct.
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct || custom(t) {
		return nil
	}
	out := map[string]reflect.Type{}
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
				walk(ft)
				continue
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if _, dup := out[name]; !dup {
				out[name] = f.Type
			}
		}
	}
	walk(t)
	return out
}
