package pipeline

import (
	"fmt"
	"testing"
)

// BenchmarkAuditWrite: chained lines per second through Write and a Flush
// per 1,000 (a sync's end).
func BenchmarkAuditWrite(b *testing.B) {
	dir := b.TempDir()
	a, err := OpenAudit(dir, AuditOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	e := AuditEntry{Time: now, SyncID: "20260102T030405-full", Mailbox: "someone.with.a.long.name@contoso.com", Device: "ApplF17XK2Q9HG7F",
		List: ListBlocked, From: Absent, To: Present, Decision: Block, Reason: ReasonNotCompliant}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if err := a.Write(e); err != nil {
			b.Fatal(err)
		}
		if n++; n%1000 == 0 {
			if err := a.Flush(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkVerifyAudit: lines per second VerifyAudit checks.
func BenchmarkVerifyAudit(b *testing.B) {
	for _, lines := range []int{100_000} {
		b.Run(fmt.Sprintf("lines=%d", lines), func(b *testing.B) {
			dir := b.TempDir()
			a, err := OpenAudit(dir, AuditOptions{})
			if err != nil {
				b.Fatal(err)
			}
			for i := range lines {
				if err := a.Write(AuditEntry{Time: now, SyncID: "s", Mailbox: fmt.Sprintf("user%d@contoso.com", i), Device: fmt.Sprintf("Appl%08d", i),
					List: ListAllowed, From: Absent, To: Present, Decision: Allow, Reason: ReasonCompliant}); err != nil {
					b.Fatal(err)
				}
			}
			if err := a.Close(); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				v, err := VerifyAudit(dir)
				if err != nil || !v.OK() || v.Lines != lines {
					b.Fatalf("VerifyAudit = %+v, %v", v, err)
				}
			}
			b.ReportMetric(float64(lines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
		})
	}
}
