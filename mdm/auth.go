package mdm

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

const assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// assertionLifetime is how long a client assertion is valid. Entra ID
// accepts up to ten minutes; one fresh assertion is made per token request.
const assertionLifetime = 10 * time.Minute

// LoadCertificate reads a PEM bundle holding the application's certificate
// and its RSA private key (PKCS #1 "RSA PRIVATE KEY" or PKCS #8 "PRIVATE
// KEY", unencrypted), as `openssl pkcs12 -nodes` writes it from the PFX that
// was uploaded to the app registration. The first certificate whose public
// key matches the key is returned.
func LoadCertificate(pemData []byte) (*x509.Certificate, *rsa.PrivateKey, error) {
	var certs []*x509.Certificate
	var key *rsa.PrivateKey
	for rest := pemData; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		switch blk.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("parse certificate: %w", err)
			}
			certs = append(certs, c)
		case "RSA PRIVATE KEY":
			k, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("parse RSA private key: %w", err)
			}
			key = k
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("parse PKCS #8 private key: %w", err)
			}
			rk, ok := k.(*rsa.PrivateKey)
			if !ok {
				return nil, nil, fmt.Errorf("private key is %T; Entra ID certificate credentials need RSA", k)
			}
			key = rk
		case "ENCRYPTED PRIVATE KEY":
			return nil, nil, errors.New("private key is encrypted; export it without a passphrase and protect the file instead")
		}
	}
	switch {
	case len(certs) == 0:
		return nil, nil, errors.New("no CERTIFICATE block in PEM data")
	case key == nil:
		return nil, nil, errors.New("no RSA private key block in PEM data")
	}
	for _, c := range certs {
		if pub, ok := c.PublicKey.(*rsa.PublicKey); ok && pub.Equal(&key.PublicKey) {
			return c, key, nil
		}
	}
	return nil, nil, errors.New("no certificate in PEM data matches the private key")
}

// assertion builds the client_assertion JWT for certificate credentials:
// RS256 over the token endpoint as audience, the application as issuer and
// subject, and the certificate's SHA-1 thumbprint as x5t so Entra ID can
// find the key.
func (g *Graph) assertion(now time.Time) (string, error) {
	thumb := sha1.Sum(g.opts.Certificate.Raw)
	jti := make([]byte, 16)
	_, _ = rand.Read(jti) // crypto/rand.Read never fails
	hdr, err := json.Marshal(map[string]string{
		"alg": "RS256", "typ": "JWT", "x5t": base64.RawURLEncoding.EncodeToString(thumb[:]),
	})
	if err != nil {
		return "", err
	}
	claims, err := json.Marshal(map[string]any{
		"aud": g.tokenURL, "iss": g.opts.ClientID, "sub": g.opts.ClientID,
		"jti": base64.RawURLEncoding.EncodeToString(jti),
		"nbf": now.Unix(), "iat": now.Unix(), "exp": now.Add(assertionLifetime).Unix(),
	})
	if err != nil {
		return "", err
	}
	signing := base64.RawURLEncoding.EncodeToString(hdr) + "." + base64.RawURLEncoding.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(nil, g.opts.PrivateKey.Reveal(), crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("sign client assertion: %w", err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// fetchToken asks the token endpoint for a new access token.
func (g *Graph) fetchToken(ctx context.Context) (*oauth2.Token, error) {
	conf := clientcredentials.Config{
		ClientID:     g.opts.ClientID,
		ClientSecret: g.opts.ClientSecret.Reveal(),
		TokenURL:     g.tokenURL,
		Scopes:       []string{g.scope},
		AuthStyle:    oauth2.AuthStyleInParams, // Entra ID's client_secret_post; no probing
	}
	if g.opts.Certificate != nil {
		a, err := g.assertion(time.Now())
		if err != nil {
			return nil, err
		}
		conf.EndpointParams = url.Values{"client_assertion_type": {assertionType}, "client_assertion": {a}}
	}
	ctx, cancel := context.WithTimeout(withEndpoint(ctx, endpointToken), g.opts.RequestTimeout)
	defer cancel()
	return conf.Token(context.WithValue(ctx, oauth2.HTTPClient, g.client))
}

type tokenSourceFunc func() (*oauth2.Token, error)

func (f tokenSourceFunc) Token() (*oauth2.Token, error) { return f() }

// token returns a valid access token, fetching a new one only when the
// cached one is within TokenEarlyExpiry of its expiry. The fetch runs under
// ctx, so a cancelled snapshot does not wait for the token endpoint.
func (g *Graph) token(ctx context.Context) (string, error) {
	select { // one fetch at a time; a caller whose ctx ends stops waiting
	case g.tokLock <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-g.tokLock }()
	ts := oauth2.ReuseTokenSourceWithExpiry(g.tok, tokenSourceFunc(func() (*oauth2.Token, error) {
		return g.fetchToken(ctx)
	}), g.opts.TokenEarlyExpiry)
	t, err := ts.Token()
	if err != nil {
		return "", err
	}
	g.tok = t
	return t.AccessToken, nil
}

// dropToken forgets the cached token after Graph rejected it (revoked
// consent, rotated credentials), so the next request fetches a new one.
func (g *Graph) dropToken(ctx context.Context) {
	select {
	case g.tokLock <- struct{}{}:
		g.tok = nil
		<-g.tokLock
	case <-ctx.Done():
	}
}

// tokenError describes a failed token request and says whether a retry
// can help: throttling, server errors and network failures can; a rejected
// credential or scope cannot.
func tokenError(err error) (wrapped error, retryable bool, retryAfter time.Duration) {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response == nil {
		return fmt.Errorf("token: %w", err), true, 0
	}
	status := re.Response.StatusCode
	retryable = status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status >= 500
	if retryable {
		retryAfter, _ = parseRetryAfter(re.Response.Header.Get("Retry-After"), time.Now())
	}
	msg := re.ErrorCode
	if d := firstLine(re.ErrorDescription); d != "" {
		msg += ": " + d
	}
	if msg == "" {
		msg = clip(sanitize(string(re.Body)), 200)
	}
	return fmt.Errorf("token: HTTP %d: %s", status, msg), retryable, retryAfter
}

// firstLine trims an Entra ID error description to its first sentence
// line: the AADSTS code and message, without the trace ids that follow.
func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\r\n")
	s, _, _ = strings.Cut(s, "\n")
	if i := strings.Index(s, " Trace ID:"); i > 0 {
		s = s[:i]
	}
	return clip(sanitize(s), 400)
}
