package psrp_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/easconnector/easconnector/runspace/psrp"
	"github.com/easconnector/easconnector/runspace/psrp/psrptest"
)

// TestWriteFuzzCorpus (with -update) writes the recorded Windows payloads
// into testdata/fuzz as seed corpus: whole stream chunks for the
// assembler, messages for the message parser, and their CLIXML for the
// decoder.
func TestWriteFuzzCorpus(t *testing.T) {
	if !*update {
		t.Skip("-update writes the corpus")
	}
	write := func(fuzz string, i int, arg string) {
		dir := filepath.Join("testdata", "fuzz", fuzz)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		body := "go test fuzz v1\n" + arg + "\n"
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("recorded-%03d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for _, name := range []string{"test_psrp_error_failed.yml", "test_psrp_stream_output_invocation.yml", "test_psrp_multiple_commands.yml"} {
		ex, err := psrptest.Load(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range ex {
			env, err := psrptest.ParseEnvelope(x.Response)
			if err != nil || x.Response == "" {
				continue
			}
			for _, p := range env.Payloads {
				n++
				write("FuzzAssembler", n, "[]byte("+strconv.Quote(string(p.Data))+")\nint(0)")
				var a psrp.Assembler
				_ = a.Write(p.Data, func(b []byte) error {
					n++
					write("FuzzParseMessage", n, "[]byte("+strconv.Quote(string(b))+")")
					if m, err := psrp.ParseMessage(b); err == nil {
						write("FuzzDecodeCLIXML", n, "[]byte("+strconv.Quote(string(m.Data))+")")
					}
					return nil
				})
			}
		}
	}
	for i, s := range hostile[:len(hostile)-1] {
		write("FuzzStringRoundTrip", i, "string("+strconv.Quote(s)+")")
	}
}
