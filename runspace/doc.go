// Package runspace manages a bounded pool of long-lived remote PowerShell
// sessions on Exchange Client Access servers, reached over WinRM (WinRS) with
// github.com/masterzen/winrm.
//
// A session is one WinRM shell running one long-lived powershell.exe. The
// command line carries only the constant stage 0 (Stage0); stage 1
// (bootstrap.ps1, embedded) and every request travel over stdin as tagged
// base64 JSON lines (protocol.go). Requests name an allowlisted cmdlet and
// carry arguments as data that the bootstrap binds by splatting, so no value
// is ever parsed as PowerShell code.
package runspace
