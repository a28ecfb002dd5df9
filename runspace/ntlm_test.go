package runspace_test

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/easconnector/easconnector/internal/secret"
	"github.com/easconnector/easconnector/loadtest/exsim"
	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
	"github.com/easconnector/easconnector/runspace"
)

// ntlmGate fronts a WS-Man server with connection-bound NTLM as HTTP.sys
// does: Negotiate and Authenticate must arrive on the same connection,
// which then stays authenticated. It accepts any Authenticate message.
type ntlmGate struct {
	inner      http.Handler
	user, pass string

	mu         sync.Mutex
	conns      map[string]string // remote address → "challenged" | "authenticated"
	handshakes atomic.Int32
	violations atomic.Int32 // Authenticate on a connection that was not challenged
	// bad, when set, replaces the CHALLENGE token (base64) sent to
	// every NEGOTIATE; authenticates counts the AUTHENTICATE messages
	// that came back anyway.
	bad           atomic.Pointer[string]
	authenticates atomic.Int32
}

// challenge is a minimal NTLM CHALLENGE_MESSAGE: unicode, NTLM, extended
// session security, target info holding only MsvAvEOL.
func challenge() string {
	b := make([]byte, 52)
	copy(b, "NTLMSSP\x00")
	binary.LittleEndian.PutUint32(b[8:], 2)
	binary.LittleEndian.PutUint32(b[16:], 48) // TargetName offset (empty)
	binary.LittleEndian.PutUint32(b[20:], 0x00000001|0x00000200|0x00080000|0x00800000)
	copy(b[24:32], "chal1234")
	binary.LittleEndian.PutUint16(b[40:], 4) // TargetInfo: len, maxlen, offset
	binary.LittleEndian.PutUint16(b[42:], 4)
	binary.LittleEndian.PutUint32(b[44:], 48)
	return base64.StdEncoding.EncodeToString(b)
}

func (g *ntlmGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	addr := r.RemoteAddr
	g.mu.Lock()
	state := g.conns[addr]
	g.mu.Unlock()
	auth := r.Header.Get("Authorization")
	deny := func(header string) {
		w.Header().Set("WWW-Authenticate", header)
		w.WriteHeader(http.StatusUnauthorized)
	}
	scheme, token, _ := strings.Cut(auth, " ")
	switch {
	case auth == "" && state == "authenticated":
	case scheme == "NTLM" || scheme == "Negotiate":
		msg, err := base64.StdEncoding.DecodeString(token)
		if err != nil || len(msg) < 12 || string(msg[:8]) != "NTLMSSP\x00" {
			deny("NTLM")
			return
		}
		switch binary.LittleEndian.Uint32(msg[8:]) {
		case 1:
			g.mu.Lock()
			g.conns[addr] = "challenged"
			g.mu.Unlock()
			if bad := g.bad.Load(); bad != nil {
				deny(scheme + " " + *bad)
				return
			}
			deny(scheme + " " + challenge())
			return
		case 3:
			if g.bad.Load() != nil {
				g.authenticates.Add(1)
				deny("NTLM")
				return
			}
			if state != "challenged" {
				g.violations.Add(1)
				deny("NTLM")
				return
			}
			g.handshakes.Add(1)
			g.mu.Lock()
			g.conns[addr] = "authenticated"
			g.mu.Unlock()
		default:
			deny("NTLM")
			return
		}
	default:
		deny("NTLM")
		return
	}
	r.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(g.user+":"+g.pass)))
	g.inner.ServeHTTP(w, r)
}

// TestPoolNTLM: with NTLM every session has its own connections, and each
// handshake stays on one connection while a Receive long-poll and stdin
// Sends run side by side.
func TestPoolNTLM(t *testing.T) {
	sim, err := exsim.New(exsim.Options{Quiet: true})
	if err != nil {
		t.Fatal(err)
	}
	gate, ts := startNTLMGate(t, sim)
	host, port, _ := net.SplitHostPort(ts.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	pool := startPool(t, runspace.Options{
		Servers: []string{host}, Port: p, Auth: runspace.AuthNTLM, PlainHTTP: true, Mode: runspace.ModeRemoting,
		User: `CONTOSO\` + exsim.DefaultUser, Password: secret.New(exsim.DefaultPassword),
		Parallel: true, Size: 4, OperationTimeout: time.Second, ConnectTimeout: 10 * time.Second,
	})
	ctx := testCtx(t, 30*time.Second)
	var wg sync.WaitGroup
	for range 24 {
		wg.Go(func() {
			if _, err := pool.Do(ctx, getSettings, nil); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if v := gate.violations.Load(); v != 0 {
		t.Errorf("%d NTLM handshakes were split across connections", v)
	}
	if h := gate.handshakes.Load(); h == 0 {
		t.Error("no NTLM handshake took place")
	}
}

// startNTLMGate serves sim's WS-Man endpoint behind an ntlmGate on a
// loopback port.
func startNTLMGate(t *testing.T, sim *exsim.Sim) (*ntlmGate, *httptest.Server) {
	t.Helper()
	ws := wsman.NewServer(wsman.Options{Users: sim.Users()}, sim.Runner(0))
	gate := &ntlmGate{inner: ws, user: exsim.DefaultUser, pass: exsim.DefaultPassword, conns: map[string]string{}}
	ts := httptest.NewUnstartedServer(gate)
	ts.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateClosed || s == http.StateHijacked {
			gate.mu.Lock()
			delete(gate.conns, c.RemoteAddr().String())
			gate.mu.Unlock()
		}
	}
	ts.Start()
	t.Cleanup(func() {
		ws.Close()
		ts.Close()
	})
	return gate, ts
}
