package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/internal/secret"
	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/runspace"
)

// BenchmarkSessionKinds compares the two session kinds in one run, psrp
// (MS-PSRP to /PowerShell/) against WinRS (remoting bootstrap), on the
// zero latency profile: session open, one round trip, and streaming
// devices through exchange.Client.MobileDevices. exsim runs as its own
// process (cmd/exsim, built once) so that the connector's CPU and
// allocations are measured alone; a counting TCP proxy in front of it
// gives the bytes on the wire (its own copying is in the CPU figure, a
// small part of it). EASC_BENCH_DEVICES sets the population (default
// 10,000; 100,000 for the capacity figure).
func BenchmarkSessionKinds(b *testing.B) {
	devices := 10_000
	if v := os.Getenv("EASC_BENCH_DEVICES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("EASC_BENCH_DEVICES=%q: want a positive integer", v)
		}
		devices = n
	}
	addr := startExsimProcess(b, devices)
	proxy := startCountingProxy(b, addr)
	host, port, _ := net.SplitHostPort(proxy.addr)
	p, _ := strconv.Atoi(port)
	for _, mode := range []string{runspace.ModePSRP, runspace.ModeRemoting} {
		o := runspace.Options{
			Servers: []string{host}, Port: p, Auth: runspace.AuthBasic, PlainHTTP: true,
			User: exsim.DefaultUser, Password: secret.New(exsim.DefaultPassword), Mode: mode,
			ConnectTimeout: 60 * time.Second, RequestTimeout: 10 * time.Minute, OperationTimeout: 20 * time.Second,
		}
		ctx := context.Background()
		b.Run("mode="+mode+"/op=open", func(b *testing.B) {
			b.ReportAllocs()
			proxy.reset()
			for b.Loop() {
				s, err := runspace.Open(ctx, o, host)
				if err != nil {
					b.Fatal(err)
				}
				if err := s.Close(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(proxy.total())/float64(b.N), "wire-B/op")
		})
		s, err := runspace.Open(ctx, o, host)
		if err != nil {
			b.Fatal(err)
		}
		c := exchange.New(s)
		b.Run("mode="+mode+"/op=roundtrip", func(b *testing.B) {
			b.ReportAllocs()
			proxy.reset()
			for b.Loop() {
				if _, err := c.OrgSettings(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(proxy.total())/float64(b.N), "wire-B/op")
		})
		b.Run(fmt.Sprintf("mode=%s/op=stream/devices=%d", mode, devices), func(b *testing.B) {
			proxy.reset()
			var ms0, ms1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms0)
			cpu0 := cpuTime()
			n := 0
			start := time.Now()
			for b.Loop() {
				err := c.MobileDevices(ctx, exchange.DeviceFilter{}, func(d exchange.MobileDevice, err error) error {
					n++
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			elapsed := time.Since(start)
			cpu := cpuTime() - cpu0
			runtime.ReadMemStats(&ms1)
			if n != devices*b.N {
				b.Fatalf("%d devices streamed, want %d", n, devices*b.N)
			}
			b.ReportMetric(float64(n)/elapsed.Seconds(), "devices/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "cpu-ns/device")
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(n), "allocs/device")
			b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/float64(n), "B-alloc/device")
			b.ReportMetric(float64(proxy.total())/float64(n), "wire-B/device")
		})
		if err := s.Close(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

var (
	exsimOnce sync.Once
	exsimBin  string
	exsimErr  error
)

// startExsimProcess builds cmd/exsim once and runs it on free loopback
// ports with the zero profile.
func startExsimProcess(b *testing.B, devices int) string {
	b.Helper()
	exsimOnce.Do(func() {
		dir, err := os.MkdirTemp("", "easc-bench-exsim")
		if err != nil {
			exsimErr = err
			return
		}
		exsimBin = filepath.Join(dir, "exsim")
		out, err := exec.Command("go", "build", "-o", exsimBin, "github.com/easconnector/easconnector/cmd/exsim").CombinedOutput()
		if err != nil {
			exsimErr = fmt.Errorf("go build cmd/exsim: %v: %s", err, out)
		}
	})
	if exsimErr != nil {
		b.Fatal(exsimErr)
	}
	port, control := freePort(b), freePort(b)
	cmd := exec.Command(exsimBin, "-port", strconv.Itoa(port), "-control", "127.0.0.1:"+strconv.Itoa(control),
		"-devices", strconv.Itoa(devices), "-profile", exsim.ProfileZero, "-quiet", "-max-concurrency", "-1")
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			b.Fatalf("exsim did not listen on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort(b *testing.B) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// countingProxy forwards loopback TCP to exsim and counts the bytes each
// way: what the connector puts on and takes off the wire.
type countingProxy struct {
	addr    string
	up, dwn atomic.Int64
}

func (p *countingProxy) reset()       { p.up.Store(0); p.dwn.Store(0) }
func (p *countingProxy) total() int64 { return p.up.Load() + p.dwn.Load() }

type countWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

func startCountingProxy(b *testing.B, target string) *countingProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	p := &countingProxy{addr: l.Addr().String()}
	var wg sync.WaitGroup
	b.Cleanup(func() { l.Close(); wg.Wait() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(countWriter{s, &p.up}, c); s.(*net.TCPConn).CloseWrite() }()
			go func() { defer wg.Done(); io.Copy(countWriter{c, &p.dwn}, s); c.(*net.TCPConn).CloseWrite() }()
		}
	}()
	return p
}
