package psrp

import (
	"fmt"
	"strconv"
)

// PoolState is a RunspacePoolState (MS-PSRP 2.2.3.4).
type PoolState int32

// Runspace pool states.
const (
	PoolBeforeOpen           PoolState = 0
	PoolOpening              PoolState = 1
	PoolOpened               PoolState = 2
	PoolClosed               PoolState = 3
	PoolClosing              PoolState = 4
	PoolBroken               PoolState = 5
	PoolNegotiationSent      PoolState = 6
	PoolNegotiationSucceeded PoolState = 7
	PoolConnecting           PoolState = 8
	PoolDisconnected         PoolState = 9
)

func (s PoolState) String() string {
	names := [...]string{"BeforeOpen", "Opening", "Opened", "Closed", "Closing", "Broken", "NegotiationSent", "NegotiationSucceeded", "Connecting", "Disconnected"}
	if s >= 0 && int(s) < len(names) {
		return names[s]
	}
	return "PoolState(" + strconv.Itoa(int(s)) + ")"
}

// PipeState is a PSInvocationState (MS-PSRP 2.2.3.5).
type PipeState int32

// Pipeline states.
const (
	PipeNotStarted   PipeState = 0
	PipeRunning      PipeState = 1
	PipeStopping     PipeState = 2
	PipeStopped      PipeState = 3
	PipeCompleted    PipeState = 4
	PipeFailed       PipeState = 5
	PipeDisconnected PipeState = 6
)

func (s PipeState) String() string {
	names := [...]string{"NotStarted", "Running", "Stopping", "Stopped", "Completed", "Failed", "Disconnected"}
	if s >= 0 && int(s) < len(names) {
		return names[s]
	}
	return "PipeState(" + strconv.Itoa(int(s)) + ")"
}

// Terminal reports whether no more messages follow for the pipeline.
func (s PipeState) Terminal() bool {
	return s == PipeStopped || s == PipeCompleted || s == PipeFailed
}

// PoolStateInfo is a RUNSPACEPOOL_STATE message (MS-PSRP 2.2.2.3).
type PoolStateInfo struct {
	State PoolState
	Err   *ErrorInfo // ExceptionAsErrorRecord, when the pool broke
}

// PipelineStateInfo is a PIPELINE_STATE message (MS-PSRP 2.2.2.21).
type PipelineStateInfo struct {
	State PipeState
	Err   *ErrorInfo // ExceptionAsErrorRecord of a failed or stopped pipeline
}

// ErrorInfo is the part of an ErrorRecord (MS-PSRP 2.2.3.15) a client
// classifies by: FullyQualifiedErrorId and the category are language
// independent, the message is not.
type ErrorInfo struct {
	FullyQualifiedErrorID string
	Category              int32  // ErrorCategory (MS-PSRP 2.2.3.15; 0 NotSpecified … 31)
	CategoryName          string // from ErrorCategory_Message's first word when present
	Reason                string // ErrorCategory_Reason: usually the exception's short type name
	Activity              string // ErrorCategory_Activity: usually the cmdlet
	ExceptionType         string // the exception's most derived type name, without "Deserialized."
	Message               string // the exception's Message, or the record's ToString
	TargetObject          string // the TargetObject's string form
}

func (e *ErrorInfo) Error() string {
	return e.ExceptionType + ": " + e.Message + " (" + e.FullyQualifiedErrorID + ")"
}

func topObject(data []byte, what string) (*Object, error) {
	v, err := DecodeValue(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if v.Kind != KindObject {
		return nil, fmt.Errorf("%s: %w: <%s> where an object is expected", what, ErrCLIXML, v.Tag)
	}
	return v.Obj, nil
}

func intProp(o *Object, name, what string) (int64, error) {
	v, ok := o.Prop(name)
	if !ok {
		return 0, fmt.Errorf("%s: %w: no %s", what, ErrCLIXML, name)
	}
	n, err := v.Int()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	return n, nil
}

// ParsePoolState decodes RUNSPACEPOOL_STATE data.
func ParsePoolState(data []byte) (PoolStateInfo, error) {
	const what = "runspace pool state"
	o, err := topObject(data, what)
	if err != nil {
		return PoolStateInfo{}, err
	}
	n, err := intProp(o, "RunspaceState", what)
	if err != nil {
		return PoolStateInfo{}, err
	}
	info := PoolStateInfo{State: PoolState(n)}
	if v, ok := o.Prop("ExceptionAsErrorRecord"); ok && v.Kind == KindObject {
		info.Err = errorInfo(v.Obj)
	}
	return info, nil
}

// ParsePipelineState decodes PIPELINE_STATE data.
func ParsePipelineState(data []byte) (PipelineStateInfo, error) {
	const what = "pipeline state"
	o, err := topObject(data, what)
	if err != nil {
		return PipelineStateInfo{}, err
	}
	n, err := intProp(o, "PipelineState", what)
	if err != nil {
		return PipelineStateInfo{}, err
	}
	info := PipelineStateInfo{State: PipeState(n)}
	if v, ok := o.Prop("ExceptionAsErrorRecord"); ok && v.Kind == KindObject {
		info.Err = errorInfo(v.Obj)
	}
	return info, nil
}

// ParseErrorRecord decodes ERROR_RECORD data (MS-PSRP 2.2.2.20).
func ParseErrorRecord(data []byte) (*ErrorInfo, error) {
	o, err := topObject(data, "error record")
	if err != nil {
		return nil, err
	}
	if _, ok := o.Prop("FullyQualifiedErrorId"); !ok {
		return nil, fmt.Errorf("error record: %w: no FullyQualifiedErrorId", ErrCLIXML)
	}
	return errorInfo(o), nil
}

func errorInfo(o *Object) *ErrorInfo {
	e := &ErrorInfo{Message: o.ToString}
	str := func(name string) string {
		v, _ := o.Prop(name)
		return v.String()
	}
	e.FullyQualifiedErrorID = str("FullyQualifiedErrorId")
	if v, ok := o.Prop("ErrorCategory_Category"); ok {
		if n, err := v.Int(); err == nil {
			e.Category = int32(n)
		}
	}
	e.Reason = str("ErrorCategory_Reason")
	e.Activity = str("ErrorCategory_Activity")
	if m := str("ErrorCategory_Message"); m != "" {
		for i := 0; i < len(m); i++ {
			if m[i] == ':' || m[i] == ' ' {
				e.CategoryName = m[:i]
				break
			}
		}
	}
	if e.CategoryName == "" {
		e.CategoryName = CategoryName(e.Category)
	}
	if v, ok := o.Prop("TargetObject"); ok {
		e.TargetObject = v.String()
	}
	if v, ok := o.Prop("Exception"); ok && v.Kind == KindObject {
		if len(v.Obj.TypeNames) > 0 {
			t := v.Obj.TypeNames[0]
			const pfx = "Deserialized."
			if len(t) > len(pfx) && t[:len(pfx)] == pfx {
				t = t[len(pfx):]
			}
			e.ExceptionType = t
		}
		if m, ok := v.Obj.Prop("Message"); ok && m.Kind == KindString {
			e.Message = m.Text
		}
	}
	return e
}

// categories are the names of ErrorCategory values 0–31 (MS-PSRP
// 2.2.3.15 / System.Management.Automation.ErrorCategory).
var categories = [...]string{"NotSpecified", "OpenError", "CloseError", "DeviceError", "DeadlockDetected",
	"InvalidArgument", "InvalidData", "InvalidOperation", "InvalidResult", "InvalidType", "MetadataError",
	"NotImplemented", "NotInstalled", "ObjectNotFound", "OperationStopped", "OperationTimeout", "SyntaxError",
	"ParserError", "PermissionDenied", "ResourceBusy", "ResourceExists", "ResourceUnavailable", "ReadError",
	"WriteError", "FromStdErr", "SecurityError", "ProtocolError", "ConnectionError", "AuthenticationError",
	"LimitsExceeded", "QuotaExceeded", "NotEnabled"}

// CategoryName returns the name of an ErrorCategory value.
func CategoryName(c int32) string {
	if c >= 0 && int(c) < len(categories) {
		return categories[c]
	}
	return "ErrorCategory(" + strconv.Itoa(int(c)) + ")"
}

// ParseInformational decodes WARNING_RECORD, VERBOSE_RECORD or
// DEBUG_RECORD data (MS-PSRP 2.2.2.22–24: an InformationalRecord whose
// InformationalRecord_Message holds the text) and INFORMATION_RECORD data
// (2.2.2.26: MessageData, usually a string) into the message text.
func ParseInformational(data []byte) (string, error) {
	v, err := DecodeValue(data)
	if err != nil {
		return "", fmt.Errorf("informational record: %w", err)
	}
	if v.Kind != KindObject {
		return v.String(), nil
	}
	for _, name := range []string{"InformationalRecord_Message", "MessageData"} {
		if m, ok := v.Obj.Prop(name); ok {
			return m.String(), nil
		}
	}
	return v.Obj.ToString, nil
}

// PrivateData is what APPLICATION_PRIVATE_DATA (MS-PSRP 2.2.2.13) says of
// the server.
type PrivateData struct {
	PSVersion                 string
	PSRemotingProtocolVersion string
	BuildVersion              string
	// Values holds the other top-level entries of ApplicationPrivateData
	// whose values are primitives (Exchange adds its own).
	Values map[string]string
}

// ParseApplicationPrivateData decodes APPLICATION_PRIVATE_DATA data.
func ParseApplicationPrivateData(data []byte) (PrivateData, error) {
	const what = "application private data"
	o, err := topObject(data, what)
	if err != nil {
		return PrivateData{}, err
	}
	var pd PrivateData
	v, ok := o.Prop("ApplicationPrivateData")
	if !ok {
		return pd, fmt.Errorf("%s: %w: no ApplicationPrivateData", what, ErrCLIXML)
	}
	if v.Kind != KindObject {
		return pd, nil // <Nil>: the server has none
	}
	for _, en := range v.Obj.Dict {
		k := en.Key.String()
		if k == "PSVersionTable" && en.Value.Kind == KindObject {
			s := func(key string) string { x, _ := en.Value.Obj.DictValue(key); return x.String() }
			pd.PSVersion = s("PSVersion")
			pd.PSRemotingProtocolVersion = s("PSRemotingProtocolVersion")
			pd.BuildVersion = s("BuildVersion")
			continue
		}
		if en.Value.Kind != KindObject {
			if pd.Values == nil {
				pd.Values = map[string]string{}
			}
			pd.Values[k] = en.Value.Text
		}
	}
	return pd, nil
}
