package mailsink

import (
	"net/smtp"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestSinkKeepsMessages(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mail")
	m, err := Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	msg := "Subject: hello\r\n\r\nbody\r\n"
	if err := smtp.SendMail("127.0.0.1:"+strconv.Itoa(m.Port()), nil, "a@x.example", []string{"b@x.example"}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	if m.Count() != 1 {
		t.Fatalf("Count() = %d, want 1", m.Count())
	}
	b, err := os.ReadFile(filepath.Join(m.Dir(), "00001.eml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"X-Envelope-From: a@x.example", "[b@x.example]", "Subject: hello"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("kept message lacks %q:\n%s", want, b)
		}
	}
}
