package hostaddr

import (
	"context"
	"errors"
	"testing"
)

func TestValid(t *testing.T) {
	f := func(s string, want bool) {
		t.Helper()
		if got := Valid(s); got != want {
			t.Errorf("Valid(%q) = %v, want %v", s, got, want)
		}
	}
	f("ex1.contoso.com", true)
	f("EX_LAB-1", true)
	f("10.0.0.1", true)
	f("::1", true)
	f("", false)
	f("[::1]", false)
	f("ex1:5986", false)
	f("https://ex1", false)
	f("ex 1", false)
}

func TestLoopback(t *testing.T) {
	r := Static{"localhost": {"127.0.0.1", "::1"}, "evil-localhost": {"127.0.0.1", "203.0.113.7"}, "lan": {"192.0.2.10"}, "empty": {}}
	f := func(host string, want bool, wantErr error) {
		t.Helper()
		ips, err := Loopback(context.Background(), r, host)
		if got := err == nil; got != want || (wantErr != nil && !errors.Is(err, wantErr)) {
			t.Errorf("Loopback(%q) = %v, %v; want loopback %v (err %v)", host, ips, err, want, wantErr)
		}
		if IsLoopback(context.Background(), r, host) != want {
			t.Errorf("IsLoopback(%q) != %v", host, want)
		}
	}
	f("127.0.0.1", true, nil)
	f("127.8.9.10", true, nil)
	f("::1", true, nil)
	f("localhost", true, nil)
	f("LOCALHOST.", true, nil)
	f("evil-localhost", false, ErrNotLoopback)
	f("lan", false, ErrNotLoopback)
	f("0.0.0.0", false, ErrNotLoopback)
	f("::", false, ErrNotLoopback)
	f("", false, ErrNotLoopback)
	f("10.1.2.3", false, ErrNotLoopback)
	f("empty", false, nil)
	f("unknown", false, nil)
	if !IsLoopbackIP("127.0.0.1") || IsLoopbackIP("localhost") || IsLoopbackIP("10.0.0.1") {
		t.Error("IsLoopbackIP wrong")
	}
}
