package exsim

import (
	"bufio"
	"context"
	"io"
	"testing"
	"time"

	"github.com/easconnector/easconnector/loadtest/exsim/wsman"
	"github.com/easconnector/easconnector/runspace"
	"github.com/easconnector/easconnector/runspace/psrp"
)

// BenchmarkGetMobileDevice streams Get-MobileDevice -ResultSize Unlimited
// over 100,000 devices through the worker directly (no HTTP), with the
// properties a full sync selects, and reports objects/s. The client side
// only splits lines, so the figure is the simulator's own cost.
func BenchmarkGetMobileDevice(b *testing.B) {
	const devices = 100_000
	s := newSim(b, Options{Population: genPopulation(devices), Quiet: true})
	for _, bc := range []struct {
		name   string
		filter string
		want   int
	}{
		{"devices=100000/all", "", devices},
		// New partnerships since a quick sync's watermark: ~10 % of the fleet.
		{"devices=100000/filter=firstsync", "FirstSyncTime -gt '" + fixedNow.Add(-40*24*time.Hour).Format("01/02/2006 15:04:05") + "'", 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			inR, inW := io.Pipe()
			outR, outW := io.Pipe()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				s.Runner(0).Run(ctx, wsman.Command{User: DefaultUser, Name: runspace.PowerShellExe, Args: runspace.CommandArgs()},
					inR, outW, io.Discard)
				_ = outW.Close()
			}()
			defer func() { _ = inW.Close(); cancel(); <-done }()
			br := bufio.NewReaderSize(outR, 1<<20)
			mustWrite := func(p []byte) {
				if _, err := inW.Write(p); err != nil {
					b.Fatal(err)
				}
			}
			mustWrite(runspace.Stage1Line())
			cfg, _ := runspace.EncodeLine(snapin())
			mustWrite(cfg)
			if f, err := readFrameLine(br); err != nil || !f.Ready {
				b.Fatalf("ready: %+v %v", f, err)
			}
			args := map[string]any{"ResultSize": "Unlimited"}
			if bc.filter != "" {
				args["Filter"] = bc.filter
			}
			sel := []string{"Identity", "DistinguishedName", "DeviceId", "DeviceType", "DeviceModel", "DeviceOS",
				"DeviceUserAgent", "FirstSyncTime", "DeviceAccessState", "DeviceAccessStateReason"}
			var objects, id int
			b.ReportAllocs()
			for b.Loop() {
				id++
				req, err := runspace.EncodeLine(runspace.Request{ID: uint64(id), Cmd: "Get-MobileDevice", Args: args, Select: sel})
				if err != nil {
					b.Fatal(err)
				}
				mustWrite(req)
				n := 0
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						b.Fatal(err)
					}
					if len(line) < 200 { // obj frames are longer; decode the short ones
						f, err := runspace.DecodeFrame(line)
						if err != nil {
							b.Fatal(err)
						}
						if f.End {
							if f.Count != n || bc.want > 0 && n != bc.want {
								b.Fatalf("count %d, read %d, want %d", f.Count, n, bc.want)
							}
							break
						}
					}
					n++
				}
				objects += n
			}
			b.ReportMetric(float64(objects)/b.Elapsed().Seconds(), "objects/s")
			b.ReportMetric(float64(devices*b.N)/b.Elapsed().Seconds(), "devices-scanned/s")
		})
	}
}

func readFrameLine(br *bufio.Reader) (runspace.Frame, error) {
	line, err := br.ReadBytes('\n')
	if err != nil {
		return runspace.Frame{}, err
	}
	return runspace.DecodeFrame(line)
}

// BenchmarkPSRPGetMobileDevice streams Get-MobileDevice -ResultSize
// Unlimited over HTTP from the PSRP endpoint, full objects and with
// Select-Object, and reports objects/s and the stdout bytes per object (the
// decoded fragments; base64 adds a third on the wire). The client only
// reassembles fragments, so the figure is mostly the server's cost.
func BenchmarkPSRPGetMobileDevice(b *testing.B) {
	const devices = 20_000
	s, err := Start(Options{Population: genPopulation(devices), Quiet: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	sel := []string{"Identity", "DistinguishedName", "DeviceId", "DeviceType", "DeviceModel", "DeviceOS",
		"DeviceUserAgent", "FirstSyncTime", "DeviceAccessState", "DeviceAccessStateReason"}
	for _, bc := range []struct {
		name string
		cmds []psrp.Command
	}{
		{"devices=20000/full", []psrp.Command{{Name: "Get-MobileDevice", Params: []psrp.Param{{Name: "ResultSize", Value: "Unlimited"}}}}},
		{"devices=20000/select", []psrp.Command{{Name: "Get-MobileDevice", Params: []psrp.Param{{Name: "ResultSize", Value: "Unlimited"}}},
			{Name: "Select-Object", Params: []psrp.Param{{Name: "Property", Value: sel}}}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := newPSClient(b, s, 0)
			c.open()
			defer c.close()
			before := s.WSMan(0).Stats().StdoutBytes
			cpu0 := processCPU(b)
			var objects int
			b.ReportAllocs()
			for b.Loop() {
				msgs := c.run(bc.cmds...)
				n := len(msgs) - 1
				if n != devices {
					b.Fatalf("%d objects, want %d", n, devices)
				}
				objects += n
			}
			b.ReportMetric(float64(objects)/b.Elapsed().Seconds(), "objects/s")
			b.ReportMetric(float64(s.WSMan(0).Stats().StdoutBytes-before)/float64(objects), "bytes/object")
			// Wall time depends on the machine's other load; the CPU the
			// process spent (server and test client) does much less.
			b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(objects), "cpu-µs/object")
		})
	}
}
