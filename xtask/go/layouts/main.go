// Dumps where a Go binary's runtime keeps the heap figures memtrace reads, for
// `cargo xtask go-layouts`: from the binary's DWARF (Go's own debug/dwarf, independent of
// memtrace's reader), each global's address and size and each field's offset; from its code
// (`go tool objdump` of the toolchain that built it), the instructions of a few runtime
// functions that address the globals RIP-relative, which is how memtrace finds the globals in
// a stripped binary.
//
// Usage: layouts -go GO -fields F1,F2,… -anchors A1,A2,… BINARY
// Fields are "global.path" with dots into struct members and [n] into arrays; a member of one
// of the runtime's atomic wrappers means its value. Prints one JSON object.
package main

import (
	"bufio"
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

type ref struct {
	Offset uint64 `json:"offset"`
	Global string `json:"global"`
	Addend int64  `json:"addend"`
	// The instruction's bytes with the displacement zeroed, and where the displacement is.
	Bytes  string `json:"bytes"`
	DispAt int    `json:"disp_at"`
}

type anchor struct {
	Function string `json:"function"`
	Refs     []ref  `json:"refs"`
}

type dump struct {
	Globals map[string]uint64  `json:"globals"`
	Sizes   map[string]int64   `json:"sizes"`
	Offsets map[string]*uint64 `json:"offsets"`
	Anchors []anchor           `json:"anchors"`
}

func main() {
	goCmd := flag.String("go", "go", "the go command of the toolchain that built the binary")
	fields := flag.String("fields", "", "comma-separated field paths")
	anchors := flag.String("anchors", "", "comma-separated runtime function names")
	flag.Parse()
	if flag.NArg() != 1 {
		fail("usage: layouts -go GO -fields … -anchors … BINARY")
	}
	path := flag.Arg(0)
	file, err := elf.Open(path)
	check(err)
	data, err := file.DWARF()
	check(err)
	out := dump{Globals: map[string]uint64{}, Sizes: map[string]int64{}, Offsets: map[string]*uint64{}}
	globals := variables(data)
	for _, field := range strings.Split(*fields, ",") {
		global, rest, _ := strings.Cut(field, ".")
		v, ok := globals["runtime."+global]
		if !ok {
			fail("no variable runtime." + global)
		}
		out.Globals["runtime."+global] = v.addr
		out.Sizes["runtime."+global] = v.typ.Size()
		if offset, ok := resolve(v.typ, rest); ok {
			out.Offsets[field] = &offset
		} else {
			out.Offsets[field] = nil
		}
	}
	symbols, err := file.Symbols()
	check(err)
	for _, name := range strings.Split(*anchors, ",") {
		out.Anchors = append(out.Anchors, anchor{name, disassemble(*goCmd, path, name, symbols, out.Globals)})
	}
	check(json.NewEncoder(os.Stdout).Encode(out))
}

type variable struct {
	addr uint64
	typ  dwarf.Type
}

// variables returns the runtime's global variables with their addresses and types.
func variables(data *dwarf.Data) map[string]variable {
	found := map[string]variable{}
	r := data.Reader()
	for {
		e, err := r.Next()
		check(err)
		if e == nil {
			return found
		}
		if e.Tag != dwarf.TagVariable {
			continue
		}
		name, _ := e.Val(dwarf.AttrName).(string)
		if !strings.HasPrefix(name, "runtime.") {
			continue
		}
		loc, _ := e.Val(dwarf.AttrLocation).([]byte)
		off, ok := e.Val(dwarf.AttrType).(dwarf.Offset)
		if len(loc) != 9 || loc[0] != 0x03 || !ok { // DW_OP_addr
			continue
		}
		typ, err := data.Type(off)
		check(err)
		found[name] = variable{binary.LittleEndian.Uint64(loc[1:]), typ}
	}
}

var indexed = regexp.MustCompile(`^(\w+)\[(\d+)\]$`)

// resolve walks path from typ and returns the byte offset of the word it names.
func resolve(typ dwarf.Type, path string) (uint64, bool) {
	var offset uint64
	for _, part := range strings.Split(path, ".") {
		name, index := part, -1
		if m := indexed.FindStringSubmatch(part); m != nil {
			name = m[1]
			index, _ = strconv.Atoi(m[2])
		}
		f := member(typ, name)
		if f == nil {
			return 0, false
		}
		offset += uint64(f.ByteOffset)
		typ = f.Type
		if index >= 0 {
			array, ok := strip(typ).(*dwarf.ArrayType)
			if !ok || int64(index) >= array.Count {
				return 0, false
			}
			offset += uint64(index) * uint64(array.Type.Size())
			typ = array.Type
		}
	}
	if f := member(typ, "value"); f != nil { // atomic.Uint64 and friends
		offset += uint64(f.ByteOffset)
	}
	return offset, true
}

func member(typ dwarf.Type, name string) *dwarf.StructField {
	s, ok := strip(typ).(*dwarf.StructType)
	if !ok {
		return nil
	}
	for _, f := range s.Field {
		if f.Name == name {
			return f
		}
	}
	return nil
}

func strip(typ dwarf.Type) dwarf.Type {
	for {
		t, ok := typ.(*dwarf.TypedefType)
		if !ok {
			return typ
		}
		typ = t.Type
	}
}

// An objdump line: "  file.go:12\t0x4123ab\t488d05…\tLEAQ runtime.gcController+8(SB), AX".
var operand = regexp.MustCompile(`(runtime\.(?:gcController|memstats|mheap_))(?:\+(\d+))?\(SB\)`)

// disassemble returns the instructions of function name that address a global RIP-relative.
func disassemble(goCmd, path, name string, symbols []elf.Symbol, globals map[string]uint64) []ref {
	var entry uint64
	for _, s := range symbols {
		if s.Name == name {
			entry = s.Value
		}
	}
	if entry == 0 {
		fail("no function " + name)
	}
	cmd := exec.Command(goCmd, "tool", "objdump", "-s", "^"+regexp.QuoteMeta(name)+"$", path)
	cmd.Stderr = os.Stderr
	text, err := cmd.Output()
	check(err)
	var refs []ref
	scanner := bufio.NewScanner(bytes.NewReader(text))
	for scanner.Scan() {
		cols := strings.Split(strings.TrimSpace(scanner.Text()), "\t")
		cols = nonEmpty(cols)
		if len(cols) < 4 {
			continue
		}
		m := operand.FindStringSubmatch(cols[3])
		if m == nil {
			continue
		}
		addr, err := strconv.ParseUint(strings.TrimPrefix(cols[1], "0x"), 16, 64)
		check(err)
		code, err := hex.DecodeString(cols[2])
		check(err)
		addend := int64(0)
		if m[2] != "" {
			addend, _ = strconv.ParseInt(m[2], 10, 64)
		}
		target := globals[m[1]] + uint64(addend)
		disp := int32(int64(target) - int64(addr+uint64(len(code))))
		var want [4]byte
		binary.LittleEndian.PutUint32(want[:], uint32(disp))
		at := bytes.Index(code, want[:])
		if at < 0 || bytes.LastIndex(code, want[:]) != at {
			continue // not RIP-relative, or ambiguous
		}
		copy(code[at:at+4], []byte{0, 0, 0, 0})
		refs = append(refs, ref{addr - entry, m[1], addend, hex.EncodeToString(code), at})
	}
	return refs
}

func nonEmpty(cols []string) []string {
	out := cols[:0]
	for _, c := range cols {
		if c = strings.TrimSpace(c); c != "" {
			out = append(out, c)
		}
	}
	return out
}

func check(err error) {
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "layouts:", msg)
	os.Exit(1)
}
