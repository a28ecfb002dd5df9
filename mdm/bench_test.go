package mdm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/easconnector/easconnector/internal/secret"
	"github.com/easconnector/easconnector/loadtest/graphsim"
	"github.com/easconnector/easconnector/loadtest/population"
)

// BenchmarkGraphSnapshot reads a whole fleet from graphsim over loopback:
// client and simulator share the CPU, so records/s is a floor for the
// client alone.
func BenchmarkGraphSnapshot(b *testing.B) {
	for _, n := range []int{5000, 50000} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			if testing.Short() && n > 5000 {
				b.Skip("large fleet skipped in -short")
			}
			pop := population.Generate(population.Options{Seed: 1, Devices: n})
			srv := graphsim.New(pop, graphsim.Options{TenantID: tenant, ClientID: client, ClientSecret: testSecret})
			base, err := srv.Start()
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			g, err := NewGraph(GraphOptions{TenantID: tenant, ClientID: client, ClientSecret: secret.New(testSecret), AuthorityURL: base, GraphURL: base})
			if err != nil {
				b.Fatal(err)
			}
			groups := []string{pop.Included.ID, pop.Excluded.ID}
			var total int
			b.ReportAllocs()
			for b.Loop() {
				snap, err := g.Snapshot(context.Background(), groups)
				if err != nil {
					b.Fatal(err)
				}
				total = snap.Total()
			}
			b.ReportMetric(float64(total)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(float64(total), "records/op")
		})
	}
}

// BenchmarkDecodePage decodes one full page of 1,000 selected devices, the
// client's CPU cost per Graph request.
func BenchmarkDecodePage(b *testing.B) {
	pop := population.Generate(population.Options{Seed: 1, Devices: 1200})
	srv := graphsim.New(pop, graphsim.Options{TenantID: tenant, ClientID: client, ClientSecret: testSecret})
	base, err := srv.Start()
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	g, err := NewGraph(GraphOptions{TenantID: tenant, ClientID: client, ClientSecret: secret.New(testSecret), AuthorityURL: base, GraphURL: base})
	if err != nil {
		b.Fatal(err)
	}
	tok, err := g.token(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	req, _ := http.NewRequest("GET", base+"/v1.0/deviceManagement/managedDevices?$select="+deviceSelect, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	page, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		b.Fatal(err)
	}
	var recs []Record
	b.SetBytes(int64(len(page)))
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		recs = recs[:0]
		_, n, err := decodePage(bytes.NewReader(page), func(dec *json.Decoder) error {
			var d device
			if err := decodeItem(dec, &d); err != nil {
				return err
			}
			r, err := d.record()
			recs = append(recs, r)
			return err
		})
		if err != nil || n != 1000 {
			b.Fatalf("decodePage: %d records, %v", n, err)
		}
	}
	b.ReportMetric(float64(1000*b.N)/time.Since(start).Seconds(), "records/s")
}
