//go:build linux

package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/easconnector/easconnector/internal/secret"
)

// The headless browser tests drive Debian's chromium and chromedriver
// (apt-get install chromium chromium-driver); they skip when these are not
// installed.
const (
	chromiumPath     = "/usr/bin/chromium"
	chromedriverPath = "/usr/bin/chromedriver"
	browserTimeout   = 120 * time.Second
)

// chromiumFlags are the flags of every chromium run. The host resolver rule
// keeps the browser on loopback: without it, chromium resolves names of its
// own even with background networking disabled.
func chromiumFlags(t *testing.T) []string {
	return []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", "--user-data-dir=" + browserDataDir(t)}
}

// browserDataDir is a profile directory for one chromium run. It is not
// t.TempDir: chromium's helper processes may still write to it for a
// moment after the browser has gone, which fails TempDir's cleanup, so it
// is removed with retries.
func browserDataDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "easconnector-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for range 50 {
			if err = os.RemoveAll(dir); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("chromium profile %s not removed: %v", dir, err)
	})
	return dir
}

func needBinary(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s not installed (%v): install Debian's chromium and chromium-driver to run the headless browser tests", path, err)
	}
}

// command prepares a browser process in its own process group, so that a
// timeout kills it with every child it started.
func command(ctx context.Context, path string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// chromium starts chromium headless with extra arguments; wait returns its
// stdout once it has exited.
func chromium(t *testing.T, args ...string) (wait func() []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	var stdout, stderr bytes.Buffer
	cmd := command(ctx, chromiumPath, append(chromiumFlags(t), args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start chromium: %v", err)
	}
	return func() []byte {
		t.Helper()
		defer cancel()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("chromium %v: %v\n%s", args, err, tail(stderr.String(), 2000))
		}
		return stdout.Bytes()
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// browserServer serves a test server; the URL it returns carries the
// read-only token as Basic credentials, which chromium answers the status
// page's challenge with (a browser cannot send a Bearer header when it
// navigates).
func browserServer(t *testing.T) (string, *Server, *fakeBackend) {
	t.Helper()
	s, fb := newTestServer(t, func(o *Options) { o.ReadToken = secret.New(testReadToken) })
	return serve(t, s), s, fb
}

// withToken puts the read-only token into base as Basic credentials.
func withToken(base string) string {
	return strings.Replace(base, "://", "://reader:"+testReadToken+"@", 1)
}

// TestBrowserStatusPage loads the status page in headless chromium and
// checks that what it shows matches the JSON API, then takes a screenshot.
func TestBrowserStatusPage(t *testing.T) {
	needBinary(t, chromiumPath)
	t.Parallel()
	base, _, _ := browserServer(t)

	req, _ := http.NewRequest("GET", base+"/api/v1/status", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var st Status
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}

	// Both browsers run at once: start-up dominates the test's time.
	shot := filepath.Join(t.TempDir(), "status.png")
	waitShot := chromium(t, "--screenshot="+shot, "--window-size=1280,1024", "--hide-scrollbars", withToken(base)+"/")
	dom := string(chromium(t, "--dump-dom", withToken(base)+"/")())
	text := func(id string) string {
		m := regexp.MustCompile(`id="` + id + `"[^>]*>([^<]*)<`).FindStringSubmatch(dom)
		if m == nil {
			t.Fatalf("DOM has no element #%s:\n%s", id, tail(dom, 3000))
		}
		return m[1]
	}
	parse := func(s string) int {
		n, err := strconv.Atoi(strings.ReplaceAll(s, ",", ""))
		if err != nil {
			t.Fatalf("%q is not a number", s)
		}
		return n
	}
	if got := text("connector-status"); got != st.Status {
		t.Errorf("page shows status %q, API says %q", got, st.Status)
	}
	if got := text("connector-reason"); got != st.Reason {
		t.Errorf("page shows reason %q, API says %q", got, st.Reason)
	}
	if got := parse(text("plan-new-blocks")); got != st.HeldPlan.NewBlocks {
		t.Errorf("page shows %d new blocks, API says %d", got, st.HeldPlan.NewBlocks)
	}
	if got := parse(text("plan-mailboxes")); got != st.HeldPlan.Mailboxes {
		t.Errorf("page shows %d mailboxes, API says %d", got, st.HeldPlan.Mailboxes)
	}
	bars := regexp.MustCompile(`data-decision="(\w+)"[\s\S]*?data-count="(\d+)">([\d,]+) \(`).FindAllStringSubmatch(dom, -1)
	if len(bars) != len(st.Fleet.Decisions) {
		t.Fatalf("chart has %d bars, API has %d decisions", len(bars), len(st.Fleet.Decisions))
	}
	for _, b := range bars {
		want := st.Fleet.Decisions[b[1]]
		if parse(b[2]) != want || parse(b[3]) != want {
			t.Errorf("chart bar %s shows %s (%s), API says %d", b[1], b[3], b[2], want)
		}
	}
	states := regexp.MustCompile(`data-state="(\w+)"[\s\S]*?data-count="(\d+)">([\d,]+) \(`).FindAllStringSubmatch(dom, -1)
	if len(states) != len(st.Fleet.ExchangeStatesBefore) {
		t.Fatalf("state chart has %d bars, API has %d states", len(states), len(st.Fleet.ExchangeStatesBefore))
	}
	for _, b := range states {
		if want := st.Fleet.ExchangeStatesBefore[b[1]]; parse(b[2]) != want || parse(b[3]) != want {
			t.Errorf("state bar %s shows %s, API says %d", b[1], b[3], want)
		}
	}
	if !strings.Contains(dom, "Default ("+st.DefaultMeans+")") {
		t.Errorf("page does not say what Default means (%s)", st.DefaultMeans)
	}
	for _, srv := range st.Servers {
		if !strings.Contains(dom, srv.Name) || !strings.Contains(dom, srv.Address) {
			t.Errorf("page does not list server %s", srv.Name)
		}
	}

	waitShot()
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	if err != nil || cfg.Width != 1280 || cfg.Height != 1024 {
		t.Errorf("screenshot: %dx%d, %v; want a 1280x1024 PNG", cfg.Width, cfg.Height, err)
	}
	if dir := os.Getenv("EASCONNECTOR_SCREENSHOT_DIR"); dir != "" {
		b, _ := os.ReadFile(shot)
		os.WriteFile(filepath.Join(dir, "status.png"), b, 0o644)
	}
}

// webDriver is a minimal W3C WebDriver client over chromedriver's HTTP API.
type webDriver struct {
	t       *testing.T
	base    string
	session string
	client  *http.Client
}

const elementKey = "element-6066-11e4-a52e-4f735466cecf"

func (wd *webDriver) call(method, path string, in any) json.RawMessage {
	wd.t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			wd.t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, wd.base+path, body)
	if err != nil {
		wd.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := wd.client.Do(req)
	if err != nil {
		wd.t.Fatalf("webdriver %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out struct {
		Value json.RawMessage `json:"value"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil || resp.StatusCode != 200 {
		wd.t.Fatalf("webdriver %s %s = %d %s", method, path, resp.StatusCode, tail(string(raw), 2000))
	}
	return out.Value
}

func (wd *webDriver) find(css string) string {
	wd.t.Helper()
	var el map[string]string
	if err := json.Unmarshal(wd.call("POST", "/session/"+wd.session+"/element", map[string]string{"using": "css selector", "value": css}), &el); err != nil || el[elementKey] == "" {
		wd.t.Fatalf("find %s: %v %v", css, el, err)
	}
	return el[elementKey]
}

func (wd *webDriver) elementPath(id, action string) string {
	return "/session/" + wd.session + "/element/" + id + action
}

func (wd *webDriver) text(id string) string {
	var s string
	json.Unmarshal(wd.call("GET", wd.elementPath(id, "/text"), nil), &s)
	return s
}

// waitText polls an element until its text satisfies ok.
func (wd *webDriver) waitText(id string, ok func(string) bool) string {
	wd.t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		s := wd.text(id)
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			wd.t.Fatalf("element text stayed %q", s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startChromedriver starts chromedriver on loopback and returns a client
// with a new headless chromium session; both end at cleanup.
func startChromedriver(t *testing.T) *webDriver {
	t.Helper()
	flags := chromiumFlags(t) // first, so that its profile is removed after chromedriver has stopped
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	port := freePort(t)
	var logs bytes.Buffer
	cmd := command(ctx, chromedriverPath, "--port="+strconv.Itoa(port), "--allowed-ips=127.0.0.1")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start chromedriver: %v", err)
	}
	wd := &webDriver{t: t, base: fmt.Sprintf("http://127.0.0.1:%d", port), client: &http.Client{Timeout: 30 * time.Second}}
	t.Cleanup(func() {
		if wd.session != "" {
			req, _ := http.NewRequest("DELETE", wd.base+"/session/"+wd.session, nil)
			if resp, err := wd.client.Do(req); err == nil {
				resp.Body.Close()
			}
		}
		cancel() // kills chromedriver's process group
		cmd.Wait()
		wd.client.CloseIdleConnections()
	})
	for deadline := time.Now().Add(45 * time.Second); ; {
		resp, err := wd.client.Get(wd.base + "/status")
		if err == nil {
			var st struct {
				Value struct{ Ready bool } `json:"value"`
			}
			json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if st.Value.Ready {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("chromedriver not ready: %v\n%s", err, tail(logs.String(), 2000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName":        "chrome",
		"goog:chromeOptions": map[string]any{"binary": chromiumPath, "args": flags},
	}}}
	var sess struct {
		SessionID string `json:"sessionId"`
	}
	if err := json.Unmarshal(wd.call("POST", "/session", caps), &sess); err != nil || sess.SessionID == "" {
		t.Fatalf("new session: %v", err)
	}
	wd.session = sess.SessionID
	return wd
}

// TestBrowserTriggerSync types the token into the status page and clicks
// the sync buttons in a real browser: a wrong token is refused, the right
// one reaches the Backend.
func TestBrowserTriggerSync(t *testing.T) {
	needBinary(t, chromiumPath)
	needBinary(t, chromedriverPath)
	t.Parallel()
	base, _, fb := browserServer(t)
	wd := startChromedriver(t)

	wd.call("POST", "/session/"+wd.session+"/url", map[string]string{"url": withToken(base) + "/"})
	token, msg := wd.find("#token"), wd.find("#msg")

	wd.call("POST", wd.elementPath(token, "/value"), map[string]string{"text": "not-the-admin-token"})
	wd.call("POST", wd.elementPath(wd.find("#sync-quick"), "/click"), map[string]any{})
	if got := wd.waitText(msg, func(s string) bool { return strings.HasPrefix(s, "Error") }); got != "Error: invalid token" {
		t.Errorf("message after a wrong token = %q, want %q", got, "Error: invalid token")
	}
	if k := fb.triggered(); len(k) != 0 {
		t.Fatalf("backend triggered %v with a wrong token", k)
	}

	wd.call("POST", wd.elementPath(token, "/clear"), map[string]any{})
	wd.call("POST", wd.elementPath(token, "/value"), map[string]string{"text": testToken})
	wd.call("POST", wd.elementPath(wd.find("#sync-full"), "/click"), map[string]any{})
	select {
	case kind := <-fb.trigger:
		if kind != "full" {
			t.Errorf("backend triggered a %s sync, want full", kind)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("clicking Full sync did not reach the backend")
	}
	got := wd.waitText(msg, func(s string) bool { return strings.HasPrefix(s, "Sync queued") || strings.HasPrefix(s, "Error") })
	fb.mu.Lock()
	id := fb.pending
	fb.mu.Unlock()
	if got != "Sync queued: "+id {
		t.Errorf("message = %q, want %q", got, "Sync queued: "+id)
	}
}

// TestBrowserRefreshKeepsToken: the page reloads its data in place while a
// token typed into it stays; the device search opens the device's story
// and the glossary link works.
func TestBrowserRefreshKeepsToken(t *testing.T) {
	needBinary(t, chromiumPath)
	needBinary(t, chromedriverPath)
	t.Parallel()
	s, fb := newTestServer(t, func(o *Options) { o.ReadToken = secret.New(testReadToken); o.PageRefresh = time.Second })
	base := serve(t, s)
	wd := startChromedriver(t)

	wd.call("POST", "/session/"+wd.session+"/url", map[string]string{"url": withToken(base) + "/"})
	token := wd.find("#token")
	wd.call("POST", wd.elementPath(token, "/value"), map[string]string{"text": testToken})

	fb.mu.Lock()
	fb.status.Status, fb.status.Reason = StatusConnected, ""
	fb.mu.Unlock()
	// The status pill is replaced by each refresh: find it again each time.
	deadline := time.Now().Add(45 * time.Second)
	for wd.text(wd.find("#connector-status")) != StatusConnected {
		if time.Now().After(deadline) {
			t.Fatal("the page did not refresh to the new status")
		}
		time.Sleep(100 * time.Millisecond)
	}
	var typed string
	json.Unmarshal(wd.call("GET", wd.elementPath(wd.find("#token"), "/property/value"), nil), &typed)
	if typed != testToken {
		t.Errorf("token field after a refresh = %q, want the typed token", typed)
	}
	// The approve button was replaced by the refresh; a click still posts.
	wd.call("POST", wd.elementPath(wd.find("#approve"), "/click"), map[string]any{})
	if got := wd.waitText(wd.find("#msg"), func(s string) bool { return s != "" && s != "Sending…" }); !strings.HasPrefix(got, "Plan approved") {
		t.Errorf("approve after a refresh: message %q", got)
	}

	search := wd.find("#device-search")
	wd.call("POST", wd.elementPath(search, "/value"), map[string]string{"text": "appl00000002\n"})
	story := wd.find(`section[data-device="Appl00000002"] .decision`)
	if got := wd.waitText(story, func(s string) bool { return s != "" }); got != "Block" {
		t.Errorf("story decision = %q, want Block", got)
	}
	wd.call("POST", wd.elementPath(wd.find(`a[href="/glossary#NotCompliant"]`), "/click"), map[string]any{})
	if got := wd.waitText(wd.find("#NotCompliant"), func(s string) bool { return s != "" }); got != "NotCompliant" {
		t.Errorf("glossary term = %q", got)
	}
}
