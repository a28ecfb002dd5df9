package wsman

import (
	"encoding/base64"
	"net/http/httptest"
	"testing"
	"time"

	krbclient "github.com/jcmturner/gokrb5/v8/client"
	krbconfig "github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/gssapi"
	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"
)

const (
	fuzzRealm  = "EASCONNECTOR.TEST"
	fuzzSPN    = "HTTP/cas01.easconnector.test"
	fuzzClient = "fuzzer"
)

// forgedToken builds, without a KDC, a Kerberos GSS-API token for fuzzSPN
// whose ticket is encrypted with kt's key: what a KDC would have issued.
func forgedToken(t testing.TB, kt *keytab.Keytab) []byte {
	t.Helper()
	now := time.Now().UTC()
	tkt, skey, err := messages.NewTicket(
		types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, fuzzClient), fuzzRealm,
		types.NewPrincipalName(nametype.KRB_NT_SRV_INST, fuzzSPN), fuzzRealm,
		types.NewKrbFlags(), kt, etypeID.AES256_CTS_HMAC_SHA1_96, 1, now, now, now.Add(time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	cl := krbclient.NewWithPassword(fuzzClient, fuzzRealm, "unused", krbconfig.New())
	tok, err := spnego.NewKRB5TokenAPREQ(cl, tkt, skey, []int{gssapi.ContextFlagInteg}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tok.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzKerberosToken: any Authorization token is refused without a panic,
// unless it carries a valid ticket, and then it names the ticket's client.
func FuzzKerberosToken(f *testing.F) {
	kt := keytab.New()
	if err := kt.AddEntry(fuzzSPN, fuzzRealm, "service-key", time.Now(), 1, etypeID.AES256_CTS_HMAC_SHA1_96); err != nil {
		f.Fatal(err)
	}
	k := &Kerberos{Keytab: kt, SPN: fuzzSPN}
	raw := forgedToken(f, kt)
	wrapped, err := (&spnego.SPNEGOToken{Init: true, NegTokenInit: spnego.NegTokenInit{
		MechTypes:      append(spnego.NegTokenInit{}.MechTypes, gssapi.OIDKRB5.OID()),
		MechTokenBytes: forgedToken(f, kt),
	}}).Marshal()
	if err != nil {
		f.Fatal(err)
	}
	// The valid tokens must pass once (later runs are replays).
	for _, tok := range [][]byte{raw, wrapped} {
		r := httptest.NewRequest("POST", "http://cas01.easconnector.test/wsman", nil)
		if name, realm, err := k.verify(r, base64.StdEncoding.EncodeToString(tok)); err != nil || name != fuzzClient || realm != fuzzRealm {
			f.Fatalf("verify(forged token) = %q, %q, %v; want %s@%s", name, realm, err, fuzzClient, fuzzRealm)
		}
	}
	f.Add(raw)
	f.Add(wrapped)
	f.Add([]byte{})
	f.Add([]byte("hello"))
	f.Add(raw[:len(raw)/2])
	f.Fuzz(func(t *testing.T, tok []byte) {
		r := httptest.NewRequest("POST", "http://cas01.easconnector.test/wsman", nil)
		name, realm, err := k.verify(r, base64.StdEncoding.EncodeToString(tok))
		if err == nil && (name != fuzzClient || realm != fuzzRealm) {
			t.Fatalf("verify accepted a token for %s@%s; only %s@%s holds a valid ticket", name, realm, fuzzClient, fuzzRealm)
		}
	})
}
