package graphsim

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

const assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// tokenError is an Entra ID (AADSTS) error answer.
type tokenError struct {
	status int
	code   string // OAuth2 error: invalid_client, invalid_scope, …
	aadsts int
	msg    string
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	if s.faultsNow().tokenDown {
		writeTokenError(w, tokenError{http.StatusServiceUnavailable, "temporarily_unavailable", 50196,
			"The server is temporarily unavailable, please retry later."})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		writeTokenError(w, tokenError{http.StatusBadRequest, "invalid_request", 900144,
			"The request body must contain the following parameter: 'grant_type'."})
		return
	}
	if te, ok := s.authenticate(r); !ok {
		writeTokenError(w, te)
		return
	}
	tok := randomToken(48)
	ttl := s.opts.TokenTTL
	now := time.Now()
	s.mu.Lock()
	for k, exp := range s.tokens {
		if now.After(exp) {
			delete(s.tokens, k)
		}
	}
	s.tokens[tok] = now.Add(ttl)
	s.issued++
	s.mu.Unlock()
	secs := int(ttl / time.Second)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store, no-cache")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token_type": "Bearer", "expires_in": secs, "ext_expires_in": secs, "access_token": tok,
	})
}

// authenticate checks a client-credentials request as Entra ID does, in the
// same order, and returns the error Entra would give.
func (s *Server) authenticate(r *http.Request) (tokenError, bool) {
	tenant := r.PathValue("tenant")
	if !strings.EqualFold(tenant, s.opts.TenantID) {
		return tokenError{http.StatusBadRequest, "invalid_request", 90002, fmt.Sprintf(
			"Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.", tenant)}, false
	}
	if gt := r.PostForm.Get("grant_type"); gt != "client_credentials" {
		if gt == "" {
			return missing("grant_type"), false
		}
		return tokenError{http.StatusBadRequest, "unsupported_grant_type", 70003,
			"The app requested an unsupported grant type '" + gt + "'."}, false
	}
	clientID, secret, basic := r.BasicAuth()
	if !basic {
		clientID, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if clientID == "" {
		return missing("client_id"), false
	}
	if clientID != s.opts.ClientID {
		return tokenError{http.StatusBadRequest, "unauthorized_client", 700016, fmt.Sprintf(
			"Application with identifier '%s' was not found in the directory '%s'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.", clientID, tenant)}, false
	}
	scope := r.PostForm.Get("scope")
	if scope == "" {
		return missing("scope"), false
	}
	if !strings.HasSuffix(scope, "/.default") || strings.Contains(scope, " ") {
		return tokenError{http.StatusBadRequest, "invalid_scope", 1002012, fmt.Sprintf(
			"The provided value for scope %s is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", scope)}, false
	}
	assertion := r.PostForm.Get("client_assertion")
	switch {
	case secret != "" && assertion != "":
		return tokenError{http.StatusUnauthorized, "invalid_client", 90023,
			"Only one of 'client_secret' and 'client_assertion' may be sent."}, false
	case secret != "":
		if s.opts.ClientSecret == "" || subtle.ConstantTimeCompare([]byte(secret), []byte(s.opts.ClientSecret)) != 1 {
			return tokenError{http.StatusUnauthorized, "invalid_client", 7000215,
				"Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '" + clientID + "'."}, false
		}
		return tokenError{}, true
	case assertion != "":
		if at := r.PostForm.Get("client_assertion_type"); at != assertionType {
			return tokenError{http.StatusBadRequest, "invalid_request", 50027,
				"Invalid client_assertion_type '" + at + "'; expected '" + assertionType + "'."}, false
		}
		aud := baseURL(r) + r.URL.Path
		if te, ok := s.verifyAssertion(assertion, clientID, aud, time.Now()); !ok {
			return te, false
		}
		return tokenError{}, true
	}
	return tokenError{http.StatusUnauthorized, "invalid_client", 7000218,
		"The request body must contain the following parameter: 'client_assertion' or 'client_secret'."}, false
}

func missing(param string) tokenError {
	return tokenError{http.StatusBadRequest, "invalid_request", 900144,
		"The request body must contain the following parameter: '" + param + "'."}
}

// verifyAssertion checks a client_assertion JWT: RS256 signed by the
// registered certificate (named by its x5t thumbprint), issued by and for
// clientID, addressed to the token endpoint aud, and valid at now (with
// Entra's five minutes of clock skew).
func (s *Server) verifyAssertion(jwt, clientID, aud string, now time.Time) (tokenError, bool) {
	bad := func(code int, msg string) (tokenError, bool) {
		return tokenError{http.StatusUnauthorized, "invalid_client", code, msg}, false
	}
	malformed := func(what string) (tokenError, bool) {
		return tokenError{http.StatusBadRequest, "invalid_request", 50027, "JWT token is invalid or malformed: " + what + "."}, false
	}
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return malformed("not three dot-separated parts")
	}
	var hdr struct {
		Alg string `json:"alg"`
		Typ string `json:"typ"`
		X5t string `json:"x5t"`
	}
	var claims struct {
		Aud string `json:"aud"`
		Iss string `json:"iss"`
		Sub string `json:"sub"`
		Jti string `json:"jti"`
		Exp int64  `json:"exp"`
		Nbf int64  `json:"nbf"`
	}
	if err := decodeSegment(parts[0], &hdr); err != nil {
		return malformed("header: " + err.Error())
	}
	if err := decodeSegment(parts[1], &claims); err != nil {
		return malformed("claims: " + err.Error())
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(parts[2])
	if err != nil {
		return malformed("signature encoding")
	}
	cert := s.opts.Certificate
	if cert == nil {
		return bad(700027, "Client assertion failed signature validation. Reason - The key was not found. No certificate is registered for app '"+clientID+"'.")
	}
	thumb := sha1.Sum(cert.Raw)
	if hdr.X5t != base64.RawURLEncoding.EncodeToString(thumb[:]) {
		return bad(700027, "Client assertion failed signature validation. Reason - The key was not found., Thumbprint of key used by client: '"+hdr.X5t+"'.")
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if hdr.Alg != "RS256" || !ok {
		return bad(700027, "Client assertion failed signature validation. Reason - The algorithm '"+hdr.Alg+"' is not supported.")
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig) != nil {
		return bad(700027, "Client assertion failed signature validation.")
	}
	if claims.Iss != clientID || claims.Sub != clientID {
		return bad(700021, "Client assertion application identifier doesn't match 'client_id' parameter.")
	}
	if claims.Aud != aud {
		return bad(700212, "The audience claim '"+claims.Aud+"' of the client assertion does not match the token endpoint '"+aud+"'.")
	}
	const skew = 5 * time.Minute
	if claims.Exp == 0 || now.After(time.Unix(claims.Exp, 0).Add(skew)) || (claims.Nbf != 0 && now.Add(skew).Before(time.Unix(claims.Nbf, 0))) {
		return bad(700024, "Client assertion is not within its valid time range.")
	}
	if claims.Jti == "" {
		return bad(50027, "Client assertion contains no jti claim.")
	}
	return tokenError{}, true
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.Strict().DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// writeTokenError answers with Entra ID's error shape.
func writeTokenError(w http.ResponseWriter, te tokenError) {
	now := time.Now().UTC()
	trace, corr := newGUID(), newGUID()
	desc := fmt.Sprintf("AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s",
		te.aadsts, te.msg, trace, corr, now.Format("2006-01-02 15:04:05Z"))
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(te.status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"error": te.code, "error_description": desc, "error_codes": []int{te.aadsts},
		"timestamp": now.Format("2006-01-02 15:04:05Z"), "trace_id": trace, "correlation_id": corr,
		"error_uri": "https://login.microsoftonline.com/error?code=" + fmt.Sprint(te.aadsts),
	})
}
