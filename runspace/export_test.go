package runspace

import (
	"time"

	"github.com/masterzen/winrm"
)

// SetPSRPKeepAlive changes the psrp keep-alive interval until restore.
func SetPSRPKeepAlive(d time.Duration) (restore func()) {
	old := psrpKeepAlive
	psrpKeepAlive = d
	return func() { psrpKeepAlive = old }
}

// NewTestClient returns a masterzen/winrm client on server that uses this
// package's transport, for the conformance tests of the external test
// package. stop aborts the transport and releases its connections.
func NewTestClient(opts Options, server string) (client *winrm.Client, stop func(), err error) {
	o, err := opts.resolve()
	if err != nil {
		return nil, nil, err
	}
	f, err := newTransportFactory(&o)
	if err != nil {
		return nil, nil, err
	}
	tr := f.newTransport(server)
	params := winrm.NewParameters(o.wsmanTimeout(), "en-US", envelopeSize)
	params.TransportDecorator = func() winrm.Transporter { return tr }
	ep := o.endpoint(server)
	client, err = winrm.NewClientWithParameters(ep, o.User, o.Password.Reveal(), params)
	if err != nil {
		f.close()
		return nil, nil, err
	}
	return client, func() { tr.abort(); f.close() }, nil
}
