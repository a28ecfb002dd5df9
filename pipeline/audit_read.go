package pipeline

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// ReadAuditTail returns up to limit entries from the end of the audit log
// in dir, newest first, going back into rotated files when the current one
// has fewer, and reading at most 1 MiB in all. Lines that do not decode (a
// torn last line, an edited file) are skipped; VerifyAudit reports them.
// A missing log gives no entries and no error.
func ReadAuditTail(dir string, limit int) ([]AuditEntry, error) {
	files, err := AuditFiles(dir)
	if err != nil || limit <= 0 {
		return nil, err
	}
	var out []AuditEntry
	budget := int64(maxAuditTail)
	for i := len(files) - 1; i >= 0 && len(out) < limit && budget > 0; i-- {
		buf, cut, err := readEnd(files[i], budget)
		if err != nil {
			return out, fmt.Errorf("read audit log: %w", err)
		}
		budget -= int64(len(buf))
		out = append(out, parseAuditTail(buf, cut, limit-len(out))...)
		if cut {
			break
		}
	}
	return out, nil
}

// readEnd reads up to n bytes from the end of path; cut says the result
// starts inside the file.
func readEnd(path string, n int64) ([]byte, bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil // rotated away meanwhile
	}
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	off := max(0, st.Size()-n)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return nil, false, err
	}
	return buf, off > 0, nil
}

// parseAuditTail decodes up to limit audit lines from the end of buf,
// newest first; cut says buf starts mid-line. Lines that do not decode
// are skipped.
func parseAuditTail(buf []byte, cut bool, limit int) []AuditEntry {
	lines := bytes.Split(buf, []byte{'\n'})
	if cut && len(lines) > 0 {
		lines = lines[1:]
	}
	var out []AuditEntry
	for i := len(lines) - 1; i >= 0 && len(out) < limit; i-- {
		line := lines[i]
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if e, err := ParseAuditLine(line); err == nil {
			out = append(out, e)
		}
	}
	return out
}

// Kinds of AuditProblem.
const (
	AuditBroken      = "chain"   // a line's prev is not the hash of the line before
	AuditUndecodable = "decode"  // a line is not an audit entry
	AuditUnchained   = "nohash"  // a line without prev after chained lines
	AuditTorn        = "torn"    // the file ends inside a line
	AuditMissing     = "missing" // a rotated file is missing from the sequence
	AuditHead        = "head"    // audit.head names a line the log does not have
)

// AuditProblem is one place where the audit log's chain breaks.
type AuditProblem struct {
	File string // base name
	Line int    // 1-based; 0 for the file as a whole
	Kind string // Audit*
	Msg  string
}

func (p AuditProblem) String() string {
	if p.Line == 0 {
		return fmt.Sprintf("%s: %s: %s", p.File, p.Kind, p.Msg)
	}
	return fmt.Sprintf("%s:%d: %s: %s", p.File, p.Line, p.Kind, p.Msg)
}

// AuditVerification is what VerifyAudit found.
type AuditVerification struct {
	Files  []string // checked, oldest first (base names)
	Lines  int      // complete lines read
	Legacy int      // lines without prev at the very start (written before the log was chained)
	// Anchored: the oldest line kept carries AuditGenesis, so no file was
	// lost to rotation before it.
	Anchored bool
	Head     string   // hash of the last complete line ("" for an empty log)
	Torn     []string // fragments OpenAudit set aside (base names)
	Problems []AuditProblem
}

// OK reports whether the chain is whole.
func (v *AuditVerification) OK() bool { return len(v.Problems) == 0 }

// maxAuditProblems bounds the problems listed; the rest are counted.
const maxAuditProblems = 100

// VerifyAudit checks the audit log's chain in dir across all its files
// (see the package's notes on the audit log). An error means the log
// could not be read; a broken chain is reported in Problems. It reads the
// files as they are; a line being written by a running connector at that
// moment can show as torn.
func VerifyAudit(dir string) (*AuditVerification, error) {
	v := &AuditVerification{}
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("verify audit log: %w", err)
	}
	rs, err := rotatedFiles(dir)
	if err != nil {
		return nil, fmt.Errorf("verify audit log: %w", err)
	}
	var names []string
	for i, r := range rs {
		if i > 0 && r.seq != rs[i-1].seq+1 {
			v.add(AuditProblem{File: r.name, Kind: AuditMissing,
				Msg: fmt.Sprintf("rotated files %s to %s are missing (deleted or renamed)", rotatedName(rs[i-1].seq+1), rotatedName(r.seq-1))})
		}
		names = append(names, r.name)
	}
	if _, err := os.Stat(filepath.Join(dir, AuditFile)); err == nil {
		names = append(names, AuditFile)
	}
	c := chainCheck{v: v}
	for i, name := range names {
		if err := c.file(filepath.Join(dir, name), name, i == len(names)-1); err != nil {
			return nil, fmt.Errorf("verify audit log: %w", err)
		}
		v.Files = append(v.Files, name)
	}
	v.Head = c.prev
	if b, err := os.ReadFile(filepath.Join(dir, AuditHeadFile)); err == nil {
		var h auditHead
		switch {
		case json.Unmarshal(b, &h) != nil || !isHash(h.Hash):
			v.add(AuditProblem{File: AuditHeadFile, Kind: AuditHead, Msg: "does not decode"})
		case !c.hashes[h.Hash]:
			v.add(AuditProblem{File: AuditHeadFile, Kind: AuditHead,
				Msg: fmt.Sprintf("records a last line (hash %s…, flushed %s) that the log does not have: lines were cut from the end, or the log was replaced", h.Hash[:12], h.Time.Format("2006-01-02 15:04:05Z"))})
		}
	}
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "audit.torn-") {
				v.Torn = append(v.Torn, e.Name())
			}
		}
	}
	return v, nil
}

func (v *AuditVerification) add(p AuditProblem) {
	if len(v.Problems) < maxAuditProblems {
		v.Problems = append(v.Problems, p)
	} else if len(v.Problems) == maxAuditProblems {
		v.Problems = append(v.Problems, AuditProblem{File: p.File, Kind: p.Kind, Msg: "more problems follow; only the first are listed"})
	}
}

// chainCheck follows the chain line by line across files.
type chainCheck struct {
	v       *AuditVerification
	started bool   // a line was read
	chained bool   // a line with prev was read
	prev    string // hash of the last line read
	prevAt  string // where that line is, for messages
	hashes  map[string]bool
}

func (c *chainCheck) file(path, name string, current bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if c.hashes == nil {
		c.hashes = map[string]bool{}
	}
	r := bufio.NewReaderSize(f, 64<<10)
	for n := 1; ; n++ {
		line, err := readLine(r)
		if errors.Is(err, io.EOF) && len(line) == 0 {
			return nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			if errors.Is(err, errLineTooLong) {
				c.v.add(AuditProblem{File: name, Line: n, Kind: AuditUndecodable, Msg: err.Error()})
				return nil
			}
			return err
		}
		if errors.Is(err, io.EOF) { // bytes after the last newline
			msg := "the file ends inside this line (a write cut short by a crash or power loss); the connector moves it to audit.torn-<time> at its next start and continues the chain from the line before"
			if !current {
				msg = "a rotated file ends inside a line"
			}
			c.v.add(AuditProblem{File: name, Line: n, Kind: AuditTorn, Msg: msg})
			return nil
		}
		c.v.Lines++
		c.line(line, name, n)
	}
}

var errLineTooLong = fmt.Errorf("line longer than %d bytes", maxAuditLine)

// readLine reads one line without its newline; io.EOF with data means
// the data did not end with a newline.
func readLine(r *bufio.Reader) ([]byte, error) {
	var out []byte
	for {
		chunk, err := r.ReadSlice('\n')
		out = append(out, chunk...)
		if len(out) > maxAuditLine {
			return nil, errLineTooLong
		}
		switch {
		case err == nil:
			return out[:len(out)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return out, err
		}
	}
}

func (c *chainCheck) line(line []byte, name string, n int) {
	h := lineHash(line)
	at := fmt.Sprintf("%s:%d", name, n)
	defer func() { c.prev, c.prevAt, c.started = h, at, true; c.hashes[h] = true }()
	e, err := ParseAuditLine(line)
	if err != nil {
		c.v.add(AuditProblem{File: name, Line: n, Kind: AuditUndecodable, Msg: err.Error()})
		// The next line's prev still tells whether this line was changed.
		return
	}
	switch {
	case e.Prev == "" && !c.chained:
		c.v.Legacy++
		return
	case e.Prev == "":
		c.v.add(AuditProblem{File: name, Line: n, Kind: AuditUnchained, Msg: "no prev, after lines that have one: a line was inserted"})
		return
	}
	c.chained = true
	switch {
	case !c.started:
		// The oldest line kept: its predecessor is AuditGenesis, or in a
		// file rotation deleted.
		c.v.Anchored = e.Prev == AuditGenesis
	case e.Prev == c.prev:
	default:
		what := "changed, or lines were removed, inserted or reordered between them"
		if c.hashes[e.Prev] {
			what = "lines are out of order: prev is the hash of an earlier line"
		} else if e.Prev == AuditGenesis {
			what = "a second chain starts here: the log was replaced or spliced"
		}
		c.v.add(AuditProblem{File: name, Line: n, Kind: AuditBroken,
			Msg: fmt.Sprintf("prev %s… is not the hash of %s (%s…): %s", e.Prev[:12], c.prevAt, c.prev[:12], what)})
	}
}
