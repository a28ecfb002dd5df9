package exsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/easconnector/easconnector/exchange"
	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
	"github.com/easconnector/easconnector/loadtest/population"
)

// The control API: JSON over HTTP, meant for loopback only (it has no
// authentication). Paths:
//
//	GET    /v1/status                      listeners, quotas, faults, sizes
//	GET    /v1/ca.pem                      the listeners' certificate (TLS)
//	POST   /v1/population                  {"seed","devices","domain"}: generate and load (0 → population's defaults)
//	POST   /v1/churn                       {"fraction","step"}: churn the population, apply, return changes
//	POST   /v1/changes                     [population.Change]: apply to the loaded population
//	GET    /v1/mailboxes?offset&limit      {"total","items":[CASMailbox]}
//	POST   /v1/mailboxes                   MailboxSpec → CASMailbox
//	GET    /v1/mailbox?identity=           CASMailbox
//	PATCH  /v1/mailbox?identity=           {"ActiveSyncAllowedDeviceIDs": [..] | {"add","remove"} | null, …Blocked…, "ActiveSyncEnabled"}
//	GET    /v1/devices?mailbox&offset&limit {"total","items":[MobileDevice]}
//	POST   /v1/devices                     DeviceSpec → MobileDevice (any strings, hostile ones included)
//	GET    /v1/device?identity=            MobileDevice
//	PATCH  /v1/device?identity=            DevicePatch → MobileDevice
//	DELETE /v1/device?identity=
//	POST   /v1/device/contact?identity=    the phone connects now: its state is evaluated and stored → MobileDevice
//	POST   /v1/devices/contact             every phone connects now → {"contacted": N}
//	GET    /v1/access?mailbox=&deviceId=   Verdict: would this device get mail now? (live, not the stored state)
//	GET    /v1/org, PUT /v1/org            OrgSettings
//	GET    /v1/rules, POST /v1/rules       DeviceAccessRule ({"Characteristic","QueryString","AccessLevel"})
//	PATCH  /v1/rule?identity=              {"AccessLevel"}
//	DELETE /v1/rule?identity=
//	GET    /v1/servers                     [ExchangeServer]
//	GET    /v1/faults, PUT /v1/faults      Faults (durations as "250ms")
//	GET    /v1/quotas, PUT /v1/quotas      Quotas (microDelay as "250ms")
//	PUT    /v1/roles/{user}                ["Get-MobileDevice", …]: the cmdlets user's roles grant in PSRP sessions; null grants all
//	POST   /v1/listeners/{i}/kill | restart | drop-shells
//	GET    /v1/listeners/{i}/shells        live WS-Man shells
//	PUT    /v1/listeners/{i}/http-faults   HTTPFaults
//	DELETE /v1/shells/{id}                 drop one shell
//	GET    /v1/counters, POST /v1/counters/reset
//	GET    /v1/calls?since&limit           call log
//	GET    /metrics                        Prometheus text
//
// Errors are {"error": "..."} with 400 (bad input), 404 (no such object),
// 409 (ambiguous or existing object).

// maxControlBody bounds request bodies (a change list of a large churn fits).
const maxControlBody = 64 << 20

// ControlHandler returns the control API.
func (s *Sim) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	h := func(pattern string, f func(r *http.Request) (any, error)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			r.Body = http.MaxBytesReader(w, r.Body, maxControlBody)
			v, err := f(r)
			if err != nil {
				writeJSON(w, statusOf(err), map[string]string{"error": err.Error()})
				return
			}
			switch v := v.(type) {
			case nil:
				w.WriteHeader(http.StatusNoContent)
			case created:
				writeJSON(w, http.StatusCreated, v.v)
			default:
				writeJSON(w, http.StatusOK, v)
			}
		})
	}
	h("GET /v1/status", s.ctlStatus)
	mux.HandleFunc("GET /v1/ca.pem", func(w http.ResponseWriter, r *http.Request) {
		if !s.opts.TLS {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "listeners do not use TLS"})
			return
		}
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(s.caPEM)
	})
	h("POST /v1/population", s.ctlPopulation)
	h("POST /v1/churn", s.ctlChurn)
	h("POST /v1/changes", s.ctlChanges)
	h("GET /v1/mailboxes", s.ctlMailboxes)
	h("POST /v1/mailboxes", s.ctlAddMailbox)
	h("GET /v1/mailbox", func(r *http.Request) (any, error) { return s.org.Mailbox(r.URL.Query().Get("identity")) })
	h("PATCH /v1/mailbox", s.ctlPatchMailbox)
	h("GET /v1/devices", s.ctlDevices)
	h("POST /v1/devices", s.ctlAddDevice)
	h("GET /v1/device", func(r *http.Request) (any, error) { return s.org.Device(r.URL.Query().Get("identity")) })
	h("PATCH /v1/device", s.ctlPatchDevice)
	h("DELETE /v1/device", func(r *http.Request) (any, error) {
		return nil, s.org.RemoveDevice(r.URL.Query().Get("identity"))
	})
	h("POST /v1/device/contact", func(r *http.Request) (any, error) { return s.org.Contact(r.URL.Query().Get("identity")) })
	h("POST /v1/devices/contact", func(*http.Request) (any, error) {
		return map[string]int{"contacted": s.org.ContactAll()}, nil
	})
	h("GET /v1/access", s.ctlAccess)
	h("GET /v1/org", func(*http.Request) (any, error) { return s.org.Settings(), nil })
	h("PUT /v1/org", s.ctlSetOrg)
	h("GET /v1/rules", func(*http.Request) (any, error) { return s.org.Rules(), nil })
	h("POST /v1/rules", s.ctlAddRule)
	h("PATCH /v1/rule", s.ctlSetRule)
	h("DELETE /v1/rule", func(r *http.Request) (any, error) { return nil, s.org.RemoveRule(r.URL.Query().Get("identity")) })
	h("GET /v1/servers", func(*http.Request) (any, error) { return s.org.Servers(), nil })
	h("GET /v1/faults", func(*http.Request) (any, error) { return faultsToWire(s.Faults()), nil })
	h("PUT /v1/faults", s.ctlSetFaults)
	h("GET /v1/quotas", func(*http.Request) (any, error) { return quotasToWire(s.Quotas()), nil })
	h("PUT /v1/quotas", s.ctlSetQuotas)
	h("PUT /v1/roles/{user}", func(r *http.Request) (any, error) {
		var cmdlets []string
		if err := decodeBody(r, &cmdlets); err != nil {
			return nil, err
		}
		if err := s.SetRoles(r.PathValue("user"), cmdlets); err != nil {
			return nil, errBadRequest(err)
		}
		return nil, nil
	})
	h("POST /v1/listeners/{i}/{action}", s.ctlListenerAction)
	h("GET /v1/listeners/{i}/shells", s.ctlShells)
	h("PUT /v1/listeners/{i}/http-faults", s.ctlHTTPFaults)
	h("DELETE /v1/shells/{id}", func(r *http.Request) (any, error) {
		if !s.DropShell(r.PathValue("id")) {
			return nil, errNotFound(fmt.Errorf("shell %s: not found", r.PathValue("id")))
		}
		return nil, nil
	})
	h("GET /v1/counters", func(*http.Request) (any, error) { return s.Counters(), nil })
	h("POST /v1/counters/reset", func(*http.Request) (any, error) { s.ResetCounters(); return nil, nil })
	h("GET /v1/calls", s.ctlCalls)
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		s.counters.metrics.WritePrometheus(w)
	})
	return mux
}

// Metrics returns the simulator's metrics set (served at /metrics of the
// control API).
func (s *Sim) Metrics() *metrics.Set { return s.counters.metrics }

type created struct{ v any }

// statusError carries an HTTP status for the control API.
type statusError struct {
	status int
	err    error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

func errNotFound(err error) error   { return &statusError{http.StatusNotFound, err} }
func errBadRequest(err error) error { return &statusError{http.StatusBadRequest, err} }

func statusOf(err error) int {
	var se *statusError
	if errors.As(err, &se) {
		return se.status
	}
	var oe *orgError
	if errors.As(err, &oe) {
		switch oe.typ {
		case typeNotFound:
			return http.StatusNotFound
		case typeAmbiguous, typeADExists:
			return http.StatusConflict
		}
		return http.StatusBadRequest
	}
	if errors.Is(err, ErrListener) {
		return http.StatusConflict
	}
	return http.StatusBadRequest
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// decodeBody decodes a JSON body strictly: unknown fields and trailing data
// are errors that name the problem.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errBadRequest(fmt.Errorf("request body: %w", err))
	}
	if dec.More() {
		return errBadRequest(errors.New("request body: trailing data after the JSON value"))
	}
	return nil
}

func queryInt(r *http.Request, name string) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, errBadRequest(fmt.Errorf("query %s: want a non-negative integer, got %q", name, v))
	}
	return n, nil
}

// Duration is a time.Duration written in JSON as a Go duration string
// ("250ms"); a bare number is read as seconds.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("duration: want a string like \"250ms\" or seconds, got %s", b)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

type listenerStatus struct {
	Index    int    `json:"index"`
	Name     string `json:"name"`
	Host     string `json:"host"`
	Endpoint string `json:"endpoint"`
	Up       bool   `json:"up"`
}

type status struct {
	Port      int              `json:"port"`
	TLS       bool             `json:"tls"`
	Profile   string           `json:"profile"`
	Listeners []listenerStatus `json:"listeners"`
	Mailboxes int              `json:"mailboxes"`
	Devices   int              `json:"devices"`
	Quotas    quotasWire       `json:"quotas"`
	Faults    faultsWire       `json:"faults"`
	Counters  Counters         `json:"counters"`
}

func (s *Sim) ctlStatus(*http.Request) (any, error) {
	st := status{Port: s.port, TLS: s.opts.TLS, Profile: s.profile.Name, Quotas: quotasToWire(s.Quotas()),
		Faults: faultsToWire(s.Faults()), Counters: s.Counters(), Devices: s.org.DeviceCount()}
	_, st.Mailboxes = s.org.Mailboxes(0, 1)
	for i, l := range s.listeners {
		ep := ""
		if s.port != 0 {
			ep = s.Endpoint(i)
		}
		st.Listeners = append(st.Listeners, listenerStatus{Index: i, Name: l.worker.server.Name, Host: l.host, Endpoint: ep, Up: s.Up(i)})
	}
	return st, nil
}

type populationRequest struct {
	Seed    uint64 `json:"seed"`
	Devices int    `json:"devices"`
	Domain  string `json:"domain"`
}

// maxControlDevices bounds a generated population.
const maxControlDevices = 1_000_000

func (s *Sim) ctlPopulation(r *http.Request) (any, error) {
	var req populationRequest
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	if req.Devices < 0 || req.Devices > maxControlDevices {
		return nil, errBadRequest(fmt.Errorf("devices: must be between 0 and %d, got %d", maxControlDevices, req.Devices))
	}
	p := population.Generate(population.Options{Seed: req.Seed, Devices: req.Devices, Domain: req.Domain})
	if err := s.LoadPopulation(p); err != nil {
		return nil, err
	}
	return map[string]int{"mailboxes": len(p.Mailboxes), "devices": len(p.Devices), "mdmRecords": len(p.MDM)}, nil
}

type churnRequest struct {
	Fraction float64  `json:"fraction"`
	Step     Duration `json:"step"`
}

func (s *Sim) ctlChurn(r *http.Request) (any, error) {
	var req churnRequest
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	changes, err := s.ApplyChurn(req.Fraction, time.Duration(req.Step))
	if err != nil {
		return nil, err
	}
	return map[string]any{"changes": changes}, nil
}

func (s *Sim) ctlChanges(r *http.Request) (any, error) {
	var changes []population.Change
	if err := decodeBody(r, &changes); err != nil {
		return nil, err
	}
	n, err := s.ApplyChanges(changes)
	if err != nil {
		return nil, err
	}
	return map[string]int{"applied": n}, nil
}

type page[T any] struct {
	Total int `json:"total"`
	Items []T `json:"items"`
}

func newPage[T any](total int, items []T) page[T] {
	if items == nil {
		items = []T{}
	}
	return page[T]{total, items}
}

func (s *Sim) ctlMailboxes(r *http.Request) (any, error) {
	off, err := queryInt(r, "offset")
	if err != nil {
		return nil, err
	}
	lim, err := queryInt(r, "limit")
	if err != nil {
		return nil, err
	}
	items, total := s.org.Mailboxes(off, lim)
	return newPage(total, items), nil
}

func (s *Sim) ctlAddMailbox(r *http.Request) (any, error) {
	var spec MailboxSpec
	if err := decodeBody(r, &spec); err != nil {
		return nil, err
	}
	mb, err := s.org.AddMailbox(spec)
	if err != nil {
		return nil, err
	}
	return created{mb}, nil
}

// parseListChange reads the control API's form of a list edit: an array
// replaces, {"add","remove"} edits, null clears.
func parseListChange(field string, raw json.RawMessage) (ListChange, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case bytes.Equal(raw, []byte("null")):
		return ListChange{Set: true}, nil
	case len(raw) > 0 && raw[0] == '[':
		var vs []string
		if err := json.Unmarshal(raw, &vs); err != nil {
			return ListChange{}, errBadRequest(fmt.Errorf("%s: %w", field, err))
		}
		return ListChange{Set: true, Values: vs}, nil
	case len(raw) > 0 && raw[0] == '{':
		var e struct {
			Add    []string `json:"add"`
			Remove []string `json:"remove"`
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return ListChange{}, errBadRequest(fmt.Errorf("%s: %w", field, err))
		}
		return ListChange{Add: e.Add, Remove: e.Remove}, nil
	}
	return ListChange{}, errBadRequest(fmt.Errorf("%s: want an array, {\"add\",\"remove\"} or null", field))
}

type mailboxPatch struct {
	Allowed json.RawMessage `json:"ActiveSyncAllowedDeviceIDs"`
	Blocked json.RawMessage `json:"ActiveSyncBlockedDeviceIDs"`
	Enabled *bool           `json:"ActiveSyncEnabled"`
}

func (s *Sim) ctlPatchMailbox(r *http.Request) (any, error) {
	id := r.URL.Query().Get("identity")
	var p mailboxPatch
	if err := decodeBody(r, &p); err != nil {
		return nil, err
	}
	var allowed, blocked ListChange
	var err error
	if p.Allowed != nil {
		if allowed, err = parseListChange("ActiveSyncAllowedDeviceIDs", p.Allowed); err != nil {
			return nil, err
		}
	}
	if p.Blocked != nil {
		if blocked, err = parseListChange("ActiveSyncBlockedDeviceIDs", p.Blocked); err != nil {
			return nil, err
		}
	}
	if err := s.org.EditLists(id, allowed, blocked); err != nil {
		return nil, err
	}
	if p.Enabled != nil {
		if err := s.org.SetActiveSyncEnabled(id, *p.Enabled); err != nil {
			return nil, err
		}
	}
	return s.org.Mailbox(id)
}

func (s *Sim) ctlDevices(r *http.Request) (any, error) {
	off, err := queryInt(r, "offset")
	if err != nil {
		return nil, err
	}
	lim, err := queryInt(r, "limit")
	if err != nil {
		return nil, err
	}
	items, total, err := s.org.Devices(r.URL.Query().Get("mailbox"), off, lim)
	if err != nil {
		return nil, err
	}
	return newPage(total, items), nil
}

func (s *Sim) ctlAddDevice(r *http.Request) (any, error) {
	var spec DeviceSpec
	if err := decodeBody(r, &spec); err != nil {
		return nil, err
	}
	d, err := s.org.AddDevice(spec)
	if err != nil {
		return nil, err
	}
	return created{d}, nil
}

func (s *Sim) ctlPatchDevice(r *http.Request) (any, error) {
	var p DevicePatch
	if err := decodeBody(r, &p); err != nil {
		return nil, err
	}
	return s.org.UpdateDevice(r.URL.Query().Get("identity"), p)
}

type accessAnswer struct {
	Mailbox  string `json:"mailbox"`
	DeviceID string `json:"deviceId"`
	Verdict
	GetsMail bool `json:"getsMail"` // DeviceAccessState is Allowed
}

func (s *Sim) ctlAccess(r *http.Request) (any, error) {
	q := r.URL.Query()
	mb, id := q.Get("mailbox"), q.Get("deviceId")
	if mb == "" || id == "" {
		return nil, errBadRequest(errors.New("query: mailbox and deviceId are required"))
	}
	v, err := s.org.Evaluate(mb, id)
	if err != nil {
		return nil, err
	}
	return accessAnswer{Mailbox: mb, DeviceID: id, Verdict: v, GetsMail: v.State == exchange.AccessAllowed}, nil
}

func (s *Sim) ctlSetOrg(r *http.Request) (any, error) {
	var o exchange.OrgSettings
	if err := decodeBody(r, &o); err != nil {
		return nil, err
	}
	if err := s.org.SetOrg(o); err != nil {
		return nil, err
	}
	return s.org.Settings(), nil
}

func (s *Sim) ctlAddRule(r *http.Request) (any, error) {
	var req struct {
		Characteristic exchange.Characteristic `json:"Characteristic"`
		QueryString    string                  `json:"QueryString"`
		AccessLevel    exchange.AccessLevel    `json:"AccessLevel"`
	}
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	rule, err := s.org.AddRule(req.Characteristic, req.QueryString, req.AccessLevel)
	if err != nil {
		return nil, err
	}
	return created{rule}, nil
}

func (s *Sim) ctlSetRule(r *http.Request) (any, error) {
	var req struct {
		AccessLevel exchange.AccessLevel `json:"AccessLevel"`
	}
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	id := r.URL.Query().Get("identity")
	if err := s.org.SetRule(id, req.AccessLevel); err != nil {
		return nil, err
	}
	return s.org.Rule(id)
}

// faultsWire is Faults with a readable duration.
type faultsWire struct {
	ErrorRate     float64  `json:"errorRate"`
	Slowdown      Duration `json:"slowdown"`
	Truncate      bool     `json:"truncate"`
	TruncateAfter int      `json:"truncateAfter"`
	Hang          bool     `json:"hang"`
	Cmdlets       []string `json:"cmdlets"`
}

func faultsToWire(f Faults) faultsWire {
	return faultsWire{f.ErrorRate, Duration(f.Slowdown), f.Truncate, f.TruncateAfter, f.Hang, f.Cmdlets}
}

func (s *Sim) ctlSetFaults(r *http.Request) (any, error) {
	var w faultsWire
	if err := decodeBody(r, &w); err != nil {
		return nil, err
	}
	f := Faults{ErrorRate: w.ErrorRate, Slowdown: time.Duration(w.Slowdown), Truncate: w.Truncate,
		TruncateAfter: w.TruncateAfter, Hang: w.Hang, Cmdlets: w.Cmdlets}
	if err := s.SetFaults(f); err != nil {
		return nil, errBadRequest(err)
	}
	return faultsToWire(s.Faults()), nil
}

type quotasWire struct {
	PowerShellMaxConcurrency       int      `json:"powerShellMaxConcurrency"`
	PowerShellMaxCmdlets           int      `json:"powerShellMaxCmdlets"`
	PowerShellMaxCmdletsTimePeriod Duration `json:"powerShellMaxCmdletsTimePeriod"`
	MicroDelay                     Duration `json:"microDelay,omitempty"`
}

func quotasToWire(q Quotas) quotasWire {
	return quotasWire{q.PowerShellMaxConcurrency, q.PowerShellMaxCmdlets, Duration(q.PowerShellMaxCmdletsTimePeriod), Duration(q.MicroDelay)}
}

func (s *Sim) ctlSetQuotas(r *http.Request) (any, error) {
	var w quotasWire
	if err := decodeBody(r, &w); err != nil {
		return nil, err
	}
	q := Quotas{PowerShellMaxConcurrency: w.PowerShellMaxConcurrency, PowerShellMaxCmdlets: w.PowerShellMaxCmdlets,
		PowerShellMaxCmdletsTimePeriod: time.Duration(w.PowerShellMaxCmdletsTimePeriod), MicroDelay: time.Duration(w.MicroDelay)}
	if err := s.SetQuotas(q); err != nil {
		return nil, errBadRequest(err)
	}
	return quotasToWire(s.Quotas()), nil
}

func pathListener(r *http.Request) (int, error) {
	i, err := strconv.Atoi(r.PathValue("i"))
	if err != nil {
		return 0, errBadRequest(fmt.Errorf("listener index %q: %w", r.PathValue("i"), err))
	}
	return i, nil
}

func (s *Sim) ctlListenerAction(r *http.Request) (any, error) {
	i, err := pathListener(r)
	if err != nil {
		return nil, err
	}
	if _, err := s.listener(i); err != nil {
		return nil, errNotFound(err)
	}
	switch a := r.PathValue("action"); a {
	case "kill":
		return nil, s.Kill(i)
	case "restart":
		return nil, s.Restart(i)
	case "drop-shells":
		n, err := s.DropShells(i)
		if err != nil {
			return nil, err
		}
		return map[string]int{"dropped": n}, nil
	default:
		return nil, errNotFound(fmt.Errorf("listener action %q: want kill, restart or drop-shells", a))
	}
}

func (s *Sim) ctlShells(r *http.Request) (any, error) {
	i, err := pathListener(r)
	if err != nil {
		return nil, err
	}
	ws := s.WSMan(i)
	if ws == nil {
		return nil, errNotFound(fmt.Errorf("%w %d: down or out of range", ErrListener, i))
	}
	shells := ws.Shells()
	if shells == nil {
		shells = []wsman.ShellInfo{}
	}
	return shells, nil
}

type httpFaultsWire struct {
	Slowdown  Duration `json:"slowdown"`
	FaultRate float64  `json:"faultRate"`
	Truncate  bool     `json:"truncate"`
}

func (s *Sim) ctlHTTPFaults(r *http.Request) (any, error) {
	i, err := pathListener(r)
	if err != nil {
		return nil, err
	}
	var w httpFaultsWire
	if err := decodeBody(r, &w); err != nil {
		return nil, err
	}
	if err := s.SetHTTPFaults(i, HTTPFaults{Slowdown: time.Duration(w.Slowdown), FaultRate: w.FaultRate, Truncate: w.Truncate}); err != nil {
		return nil, err
	}
	return w, nil
}

func (s *Sim) ctlCalls(r *http.Request) (any, error) {
	var since uint64
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, errBadRequest(fmt.Errorf("query since: %w", err))
		}
		since = n
	}
	lim, err := queryInt(r, "limit")
	if err != nil {
		return nil, err
	}
	calls := s.CallLog(since, lim)
	if calls == nil {
		calls = []Call{}
	}
	return calls, nil
}
