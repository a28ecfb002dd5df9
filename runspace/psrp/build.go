package psrp

import "fmt"

// ProtocolVersion is the PSRP version the client announces (PowerShell
// 5.1's; MS-PSRP 2.2.2.1). It is also the WS-Man "protocolversion" option
// of the Create request.
const ProtocolVersion = "2.3"

// BuildSessionCapability returns the CLIXML of SESSION_CAPABILITY
// (MS-PSRP 2.2.2.1) as pypsrp sends it to Windows (recorded in
// tests/tests_pypsrp/responses/test_psrp_open_runspace.yml).
func BuildSessionCapability() []byte {
	var e Encoder
	e.ObjStart("")
	e.Raw("<MS>")
	e.Version("protocolversion", ProtocolVersion)
	e.Version("PSVersion", "2.0")
	e.Version("SerializationVersion", "1.1.0.1")
	e.Raw("</MS>")
	e.ObjEnd()
	return e.buf
}

// hostInfoNull writes a HostInfo with no host (MS-PSRP 2.2.3.14): the
// server must not call back into a host, and easconnector offers none.
func (e *Encoder) hostInfoNull() {
	e.ObjStart("HostInfo")
	e.Raw("<MS>")
	e.Bool("_isHostNull", true)
	e.Bool("_isHostUINull", true)
	e.Bool("_isHostRawUINull", true)
	e.Bool("_useRunspaceHost", true)
	e.Raw("</MS>")
	e.ObjEnd()
}

// apartmentUnknown writes ApartmentState Unknown (MS-PSRP 2.2.3.7).
func (e *Encoder) apartmentUnknown() {
	e.Enum("ApartmentState", "System.Management.Automation.Runspaces.ApartmentState", "Unknown", 2)
}

// BuildInitRunspacePool returns the CLIXML of INIT_RUNSPACEPOOL
// (MS-PSRP 2.2.2.2): one runspace (each easconnector session runs one
// pipeline at a time), default thread options, apartment Unknown, no host
// and no application arguments.
func BuildInitRunspacePool() []byte {
	var e Encoder
	e.ObjStart("")
	e.Raw("<MS>")
	e.Int32("MinRunspaces", 1)
	e.Int32("MaxRunspaces", 1)
	e.Enum("PSThreadOptions", "System.Management.Automation.Runspaces.PSThreadOptions", "Default", 0)
	e.apartmentUnknown()
	e.hostInfoNull()
	e.Nil("ApplicationArguments")
	e.Raw("</MS>")
	e.ObjEnd()
	return e.buf
}

// Command is one command of a pipeline: a cmdlet name (never a script:
// IsScript is always false) and its parameters in order.
type Command struct {
	Name   string
	Params []Param
}

// Param is one named parameter. Value is one of the types Encoder.Value
// accepts.
type Param struct {
	Name  string
	Value any
}

const pipelineResultTypes = "System.Management.Automation.Runspaces.PipelineResultTypes"

// BuildCreatePipeline returns the CLIXML of CREATE_PIPELINE
// (MS-PSRP 2.2.2.10) for cmds piped into each other: no input, not
// nested, not added to history, no host, no stream merging. The shape is
// the one pypsrp sends to Windows (tests/tests_pypsrp/responses/
// test_psrp_error_failed.yml), with IsScript false.
func BuildCreatePipeline(cmds []Command) ([]byte, error) {
	if len(cmds) == 0 {
		return nil, fmt.Errorf("%w: pipeline without commands", ErrString)
	}
	var e Encoder
	e.ObjStart("")
	e.Raw("<MS>")
	e.Bool("NoInput", true)
	e.apartmentUnknown()
	e.Enum("RemoteStreamOptions", "System.Management.Automation.Runspaces.RemoteStreamOptions", "None", 0)
	e.Bool("AddToHistory", false)
	e.hostInfoNull()
	e.ObjStart("PowerShell")
	e.Raw("<MS>")
	e.Bool("IsNested", false)
	e.Nil("ExtraCmds")
	const listType = "System.Collections.Generic.List`1[[System.Management.Automation.PSObject, System.Management.Automation, Version=1.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35]]"
	e.ObjStart("Cmds", listType, "System.Object")
	e.Raw("<LST>")
	for _, c := range cmds {
		if !validName(c.Name) && !validCmdletName(c.Name) {
			return nil, fmt.Errorf("%w: command name %q", ErrString, c.Name)
		}
		e.ObjStart("")
		e.Raw("<MS>")
		e.String("Cmd", c.Name)
		e.Bool("IsScript", false)
		e.Nil("UseLocalScope")
		e.Enum("MergeMyResult", pipelineResultTypes, "None", 0)
		e.Enum("MergeToResult", pipelineResultTypes, "None", 0)
		e.Enum("MergePreviousResults", pipelineResultTypes, "None", 0)
		e.ObjStart("Args", listType, "System.Object")
		e.Raw("<LST>")
		for _, p := range c.Params {
			e.ObjStart("")
			e.Raw("<MS>")
			e.String("N", p.Name)
			e.Value("V", p.Value)
			e.Raw("</MS>")
			e.ObjEnd()
		}
		e.Raw("</LST>")
		e.ObjEnd()
		e.Enum("MergeError", pipelineResultTypes, "None", 0)
		e.Enum("MergeWarning", pipelineResultTypes, "None", 0)
		e.Enum("MergeVerbose", pipelineResultTypes, "None", 0)
		e.Enum("MergeDebug", pipelineResultTypes, "None", 0)
		e.Enum("MergeInformation", pipelineResultTypes, "None", 0)
		e.Raw("</MS>")
		e.ObjEnd()
	}
	e.Raw("</LST>")
	e.ObjEnd()
	e.Nil("History")
	e.Bool("RedirectShellErrorOutputPipe", false)
	e.Raw("</MS>")
	e.ObjEnd()
	e.Bool("IsNested", false)
	e.Raw("</MS>")
	e.ObjEnd()
	return e.Bytes()
}

// validCmdletName accepts Verb-Noun names of letters and digits.
func validCmdletName(s string) bool {
	dash := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '-':
			dash++
			if i == 0 || i == len(s)-1 {
				return false
			}
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		default:
			return false
		}
	}
	return dash == 1 && len(s) <= 128
}
