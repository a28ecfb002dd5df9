//go:build windows

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"

	"github.com/easconnector/easconnector/config"
)

const (
	serviceName        = "easconnector"
	serviceDisplayName = "easconnector Exchange ActiveSync connector"
	serviceDescription = "Keeps Exchange ActiveSync device access in line with the MDM's compliance verdict."
	// serviceStopHint is the wait the service announces while stopping;
	// it is renewed every stopCheckpoint until the stop is done.
	serviceStopHint = 60 * time.Second
	stopCheckpoint  = 5 * time.Second
	// serviceWait bounds how long start and stop wait for the state change.
	serviceWait = 2 * time.Minute
)

// errServiceStop is the cancellation cause when the Service Control
// Manager stops the service.
var errServiceStop = errors.New("service stop requested")

// runAsWindowsService runs the command (the service's registered
// arguments: run --config <path>) as a Windows service when the Service
// Control Manager started this process, and reports whether it did.
func runAsWindowsService(args []string) (int, bool) {
	is, err := svc.IsWindowsService()
	if err != nil || !is {
		return 0, false
	}
	elog, err := eventlog.Open(serviceName)
	if err != nil {
		elog = nil // logs are lost, the service still runs
	}
	out := &eventLogWriter{log: elog}
	h := &serviceHandler{args: args, out: out}
	if err := svc.Run(serviceName, h); err != nil {
		fmt.Fprintf(out, "level=ERROR msg=%q\n", "service: "+err.Error())
		return exitFailed, true
	}
	if elog != nil {
		elog.Close()
	}
	return h.code, true
}

// serviceHandler maps the Service Control Manager's requests onto the
// command's context: Stop and Shutdown cancel it, as SIGTERM does.
type serviceHandler struct {
	args []string
	out  io.Writer
	code int
}

func (h *serviceHandler) Execute(_ []string, req <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	status <- svc.Status{State: svc.StartPending}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	done := make(chan int, 1)
	go func() { done <- run(ctx, h.args, h.out, h.out) }()
	const accepts = svc.AcceptStop | svc.AcceptShutdown
	status <- svc.Status{State: svc.Running, Accepts: accepts}
	var tick <-chan time.Time
	var checkpoint uint32
	for {
		select {
		case h.code = <-done:
			// A non-zero exit code (service-specific) makes the recovery
			// actions restart the service (see install).
			return h.code != exitOK, uint32(h.code)
		case <-tick:
			checkpoint++
			status <- svc.Status{State: svc.StopPending, CheckPoint: checkpoint, WaitHint: uint32(serviceStopHint / time.Millisecond)}
		case c := <-req:
			switch c.Cmd {
			case svc.Interrogate:
				status <- c.CurrentStatus
			case svc.Stop, svc.Shutdown:
				if tick == nil {
					status <- svc.Status{State: svc.StopPending, WaitHint: uint32(serviceStopHint / time.Millisecond)}
					cancel(errServiceStop)
					t := time.NewTicker(stopCheckpoint)
					defer t.Stop()
					tick = t.C
				}
			}
		}
	}
}

// eventLogWriter writes the service's log lines to the Windows event log,
// as errors, warnings or information by their slog level.
type eventLogWriter struct {
	mu   sync.Mutex
	log  *eventlog.Log
	part []byte
}

func (w *eventLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.log == nil {
		return len(p), nil
	}
	w.part = append(w.part, p...)
	for {
		i := bytes.IndexByte(w.part, '\n')
		if i < 0 {
			break
		}
		line := string(w.part[:i])
		w.part = w.part[i+1:]
		switch {
		case strings.Contains(line, "level=ERROR"), strings.Contains(line, `"level":"ERROR"`):
			_ = w.log.Error(1, line)
		case strings.Contains(line, "level=WARN"), strings.Contains(line, `"level":"WARN"`):
			_ = w.log.Warning(1, line)
		default:
			_ = w.log.Info(1, line)
		}
	}
	if len(w.part) > 64<<10 { // a line without end: pass it on as it is
		_ = w.log.Info(1, string(w.part))
		w.part = w.part[:0]
	}
	return len(p), nil
}

const serviceHelp = `Manages the Windows service "easconnector" (display name
"easconnector Exchange ActiveSync connector"); run from an elevated prompt.

  install    register the service: this executable with 'run --config <file>'
             (absolute path), automatic start, restart on failure, events in
             the Application log under source "easconnector"
  uninstall  stop it if it runs, and remove it
  start      start it and wait until it runs
  stop       stop it cleanly and wait until it has stopped

It runs as the virtual account NT SERVICE\easconnector, not LocalSystem.
install gives the state directory, the configuration and every secret file
it names an ACL of that account, Administrators and SYSTEM only (inheritance
cut); the service refuses to start while others can read one of them.`

func runService(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("service", "install|uninstall|start|stop [--config file]", stderr)
	cfgPath := fs.String("config", defaultConfig, "configuration file (install)")
	withHelp(fs, serviceHelp)
	if len(args) == 0 {
		fs.Usage()
		return exitUsage
	}
	verb := args[0]
	if verb == "-h" || verb == "-help" || verb == "--help" {
		fs.SetOutput(stdout)
		fs.Usage()
		return exitOK
	}
	if code := parseFlags(fs, args[1:]); code >= 0 {
		return code
	}
	var err error
	switch verb {
	case "install":
		err = installService(*cfgPath, stdout)
	case "uninstall":
		err = uninstallService(stdout)
	case "start":
		err = startService(ctx, stdout)
	case "stop":
		err = stopService(ctx, stdout)
	default:
		fmt.Fprintf(stderr, "easconnector service: unknown action %q\n", verb)
		fs.Usage()
		return exitUsage
	}
	if err != nil {
		fmt.Fprintf(stderr, "easconnector service %s: %v\n", verb, err)
		if errors.Is(err, windows.ERROR_ACCESS_DENIED) {
			fmt.Fprintln(stderr, "Run it from an elevated (Administrator) prompt.")
		}
		return exitFailed
	}
	return exitOK
}

func installService(cfgPath string, stdout io.Writer) error {
	abs, err := filepath.Abs(cfgPath)
	if err != nil {
		return err
	}
	cfg, err := config.Load(abs)
	if err != nil {
		return fmt.Errorf("the configuration must be valid before the service is installed: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	m, err := mgr.Connect()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	if s, err := m.OpenService(serviceName); err == nil {
		s.Close()
		return fmt.Errorf("service %s exists already; 'easconnector service uninstall' first", serviceName)
	}
	s, err := m.CreateService(serviceName, exe, serviceConfig(), "run", "--config", abs)
	if err != nil {
		return err
	}
	defer s.Close()
	// The virtual account exists once the service does: now the files it
	// must read, and only it, can be given to it.
	protected, err := protectFiles(cfg, abs)
	if err != nil {
		_ = s.Delete()
		return err
	}
	restart := []mgr.RecoveryAction{
		{Type: mgr.ServiceRestart, Delay: 30 * time.Second},
		{Type: mgr.ServiceRestart, Delay: time.Minute},
		{Type: mgr.ServiceRestart, Delay: 5 * time.Minute},
	}
	if err := s.SetRecoveryActions(restart, uint32((24 * time.Hour).Seconds())); err != nil {
		_ = s.Delete()
		return fmt.Errorf("set recovery actions: %w", err)
	}
	// An exit with a non-zero code (not only a crash) counts as a failure.
	if err := s.SetRecoveryActionsOnNonCrashFailures(true); err != nil {
		_ = s.Delete()
		return fmt.Errorf("set recovery actions: %w", err)
	}
	if err := eventlog.InstallAsEventCreate(serviceName, eventlog.Error|eventlog.Warning|eventlog.Info); err != nil &&
		!strings.Contains(err.Error(), "exists") {
		fmt.Fprintf(stdout, "warning: register the event log source: %v\n", err)
	}
	fmt.Fprintf(stdout, "Service %s installed: %s run --config %s as %s (automatic start, restart on failure).\n", serviceName, exe, abs, config.WindowsServiceAccount)
	fmt.Fprintf(stdout, "Readable only by %s, Administrators and SYSTEM now:\n", config.WindowsServiceAccount)
	for _, p := range protected {
		fmt.Fprintf(stdout, "  %s\n", p)
	}
	fmt.Fprintf(stdout, "Start it: easconnector service start\n")
	return nil
}

// serviceConfig is how the service is registered. It runs as the virtual
// account NT SERVICE\easconnector, which Windows creates with the service
// and which needs no password (Microsoft Learn, "Service accounts",
// "Virtual accounts"), not as LocalSystem, which would give a bug in the
// connector the whole machine. The unrestricted service SID makes that
// account usable in ACLs.
func serviceConfig() mgr.Config {
	return mgr.Config{
		DisplayName:      serviceDisplayName,
		Description:      serviceDescription,
		StartType:        mgr.StartAutomatic,
		DelayedAutoStart: true, // after the network and the directory are up
		ErrorControl:     mgr.ErrorNormal,
		ServiceStartName: config.WindowsServiceAccount,
		SidType:          windows.SERVICE_SID_TYPE_UNRESTRICTED,
	}
}

// protectFiles gives the state directory (created if needed), the
// configuration and every secret file it names an ACL of the service
// account, Administrators and SYSTEM only, inheritance from the parent
// cut, and returns what it changed.
func protectFiles(cfg *config.Config, cfgPath string) ([]string, error) {
	if err := os.MkdirAll(cfg.Sync.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("sync.state_dir: %w", err)
	}
	if err := config.SetPrivateACL(cfg.Sync.StateDir, true); err != nil {
		return nil, err
	}
	done := []string{cfg.Sync.StateDir}
	for _, p := range append([]string{cfgPath}, cfg.SecretFiles()...) {
		if err := config.SetPrivateACL(p, false); err != nil {
			return done, err
		}
		done = append(done, p)
	}
	return done, nil
}

// withService connects to the service manager and runs fn on the installed
// easconnector service.
func withService(fn func(*mgr.Service) error) error {
	m, err := mgr.Connect()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	s, err := m.OpenService(serviceName)
	if err != nil {
		return fmt.Errorf("service %s is not installed (install it with 'easconnector service install'): %w", serviceName, err)
	}
	defer s.Close()
	return fn(s)
}

func uninstallService(stdout io.Writer) error {
	return withService(func(s *mgr.Service) error {
		if st, err := s.Query(); err == nil && st.State != svc.Stopped {
			if _, err := s.Control(svc.Stop); err == nil {
				_ = waitState(context.Background(), s, svc.Stopped)
			}
		}
		if err := s.Delete(); err != nil {
			return err
		}
		_ = eventlog.Remove(serviceName)
		fmt.Fprintf(stdout, "Service %s removed.\n", serviceName)
		return nil
	})
}

func startService(ctx context.Context, stdout io.Writer) error {
	return withService(func(s *mgr.Service) error {
		if err := s.Start(); err != nil {
			return err
		}
		if err := waitState(ctx, s, svc.Running); err != nil {
			return fmt.Errorf("%w (see the Application event log, source %s)", err, serviceName)
		}
		fmt.Fprintf(stdout, "Service %s running.\n", serviceName)
		return nil
	})
}

func stopService(ctx context.Context, stdout io.Writer) error {
	return withService(func(s *mgr.Service) error {
		if _, err := s.Control(svc.Stop); err != nil {
			return err
		}
		if err := waitState(ctx, s, svc.Stopped); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Service %s stopped.\n", serviceName)
		return nil
	})
}

// waitState polls the service until it reaches want, stops in another
// state, or serviceWait passes.
func waitState(ctx context.Context, s *mgr.Service, want svc.State) error {
	ctx, cancel := context.WithTimeout(ctx, serviceWait)
	defer cancel()
	t := time.NewTicker(300 * time.Millisecond)
	defer t.Stop()
	for {
		st, err := s.Query()
		if err != nil {
			return err
		}
		switch {
		case st.State == want:
			return nil
		case want == svc.Running && st.State == svc.Stopped:
			return fmt.Errorf("the service stopped during start-up (exit code %d)", st.ServiceSpecificExitCode|st.Win32ExitCode)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("service still %v after %s", st.State, serviceWait)
		case <-t.C:
		}
	}
}
