package wsman_test

import (
	"bufio"
	"context"
	"strings"
	"testing"
	"time"
)

// BenchmarkStockEchoRoundTrip measures one request/response round trip of
// the runspace pattern: a line written to a long-lived command's stdin and
// its echo read back, with the stock masterzen client over loopback.
func BenchmarkStockEchoRoundTrip(b *testing.B) {
	f := newFixture(b, fixtureConfig{})
	c := f.client(b, testUser, testPass, params("PT5S", 153600))
	shell, err := c.CreateShell()
	if err != nil {
		b.Fatal(err)
	}
	cmd, err := shell.ExecuteWithContext(context.Background(), "echo")
	if err != nil {
		b.Fatal(err)
	}
	stderr := drain(cmd.Stderr)
	out := bufio.NewReader(cmd.Stdout)
	line := []byte("EASC1 " + strings.Repeat("x", 200) + "\n")
	before := f.srv.Stats()
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		if _, err := cmd.Stdin.Write(line); err != nil {
			b.Fatal(err)
		}
		if _, err := out.ReadString('\n'); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	after := f.srv.Stats()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "roundtrips/s")
	b.ReportMetric(float64(after.Requests["Receive"]-before.Requests["Receive"])/float64(b.N), "receives/op")
	_ = cmd.Stdin.Close()
	cmd.Wait()
	stderr.wait(b)
	_ = cmd.Close()
	_ = shell.Close()
}

// BenchmarkStockOutputThroughput measures bulk stdout delivery (think of a
// large Get-MobileDevice result) through Receive at the default envelope size.
func BenchmarkStockOutputThroughput(b *testing.B) {
	const size = 4 << 20
	f := newFixture(b, fixtureConfig{})
	c := f.client(b, testUser, testPass, params("PT5S", 153600))
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		var stdout strings.Builder
		code, err := c.RunWithContextWithInput(context.Background(), "emit 4194304", &stdout, new(strings.Builder), nil)
		if err != nil || code != 0 || stdout.Len() != size {
			b.Fatalf("Run = %d, %v, %d bytes", code, err, stdout.Len())
		}
	}
}
