package exsim

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/easconnector/easconnector/runspace"
)

// Parameter binding reproduces what the bootstrap and PowerShell do with a
// request's args: the bootstrap turns a JSON object into @{Add=…;Remove=…},
// an array into [string[]] and passes everything else as is; PowerShell then
// binds each name case-insensitively (a unique prefix is enough), converts
// the value to the parameter's type or fails with its own error text,
// resolves the parameter set and checks mandatory parameters.

type ptype int

const (
	tyString     ptype = iota // System.String: numbers and booleans convert, arrays do not
	tyIdentity                // an Exchange *IdParameter: a non-empty string
	tySwitch                  // SwitchParameter: true = present
	tyBool                    // System.Boolean: booleans and numbers only
	tyMulti                   // MultiValuedProperty<string>: array, @{Add;Remove} or $null
	tySMTPMulti               // MultiValuedProperty<SmtpAddress>
	tyResultSize              // Unlimited<uint>
	tyFilter                  // an OPATH string
	tyEnum                    // a .NET enum named by enumType
	tyIgnored                 // common parameters that change nothing here
)

type param struct {
	name      string
	ty        ptype
	mandatory bool
	set       string   // parameter set; "" belongs to every set
	netType   string   // .NET type named in conversion errors
	enum      []string // tyEnum values
	aliases   []string
}

// actionPreference is System.Management.Automation.ActionPreference.
var actionPreference = []string{"SilentlyContinue", "Stop", "Continue", "Inquire", "Ignore", "Suspend", "Break"}

// commonParams are PowerShell's common parameters (and Exchange's
// -DomainController) that every simulated cmdlet accepts.
var commonParams = []param{
	{name: "Verbose", ty: tySwitch, aliases: []string{"vb"}},
	{name: "Debug", ty: tySwitch, aliases: []string{"db"}},
	{name: "ErrorAction", ty: tyEnum, enum: actionPreference, netType: "System.Management.Automation.ActionPreference", aliases: []string{"ea"}},
	{name: "WarningAction", ty: tyEnum, enum: actionPreference, netType: "System.Management.Automation.ActionPreference", aliases: []string{"wa"}},
	{name: "InformationAction", ty: tyEnum, enum: actionPreference, netType: "System.Management.Automation.ActionPreference", aliases: []string{"infa"}},
	{name: "ErrorVariable", ty: tyIgnored, aliases: []string{"ev"}},
	{name: "WarningVariable", ty: tyIgnored, aliases: []string{"wv"}},
	{name: "InformationVariable", ty: tyIgnored, aliases: []string{"iv"}},
	{name: "OutVariable", ty: tyIgnored, aliases: []string{"ov"}},
	{name: "OutBuffer", ty: tyIgnored, aliases: []string{"ob"}},
	{name: "PipelineVariable", ty: tyIgnored, aliases: []string{"pv"}},
	{name: "DomainController", ty: tyString},
}

// shouldProcessParams are added to cmdlets that change the organization.
var shouldProcessParams = []param{
	{name: "WhatIf", ty: tySwitch, aliases: []string{"wi"}},
	{name: "Confirm", ty: tySwitch, aliases: []string{"cf"}},
}

// listEdit is the bootstrap's @{Add=…;Remove=…}: ConvertTo-Arg copies only
// the add and remove properties of a JSON object.
type listEdit struct {
	add, remove []string
}

// bound holds converted parameter values by canonical name: string, bool,
// ListChange, int64 (ResultSize, -1 = Unlimited) or *Filter.
type bound map[string]any

func (b bound) str(name string) (string, bool) {
	v, ok := b[name].(string)
	return v, ok
}

func (b bound) flag(name string) bool {
	v, _ := b[name].(bool)
	return v
}

func (b bound) has(name string) bool {
	_, ok := b[name]
	return ok
}

var paramNameRe = regexp.MustCompile(`^[A-Za-z]{1,64}$`)

// bindArgs binds args to the cmdlet's parameters, or returns the error
// PowerShell (or the bootstrap before it) would raise.
func bindArgs(c *cmdlet, args map[string]any) (bound, *runspace.RemoteError) {
	names := make([]string, 0, len(args))
	for k := range args {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, n := range names {
		if !paramNameRe.MatchString(n) {
			return nil, errBootstrap("invalid parameter name")
		}
	}
	out := bound{}
	sets := map[string]bool{}
	for _, n := range names {
		p, re := c.resolveParam(n)
		if re != nil {
			return nil, re
		}
		if out.has(p.name) {
			return nil, errParamTwice(c.name, p.name)
		}
		v, re := convertArg(c.name, p, wireArg(args[n]))
		if re != nil {
			return nil, re
		}
		out[p.name] = v
		if p.set != "" {
			sets[p.set] = true
		}
	}
	if len(sets) > 1 {
		return nil, errParameterSet(c.name)
	}
	var missing []string
	for _, p := range c.params {
		if p.mandatory && !out.has(p.name) {
			missing = append(missing, p.name)
		}
	}
	if len(missing) > 0 {
		return nil, errMissingMandatory(c.name, missing)
	}
	return out, nil
}

// resolveParam finds the parameter a (possibly abbreviated) name denotes.
func (c *cmdlet) resolveParam(name string) (*param, *runspace.RemoteError) {
	all := c.allParams()
	for i := range all {
		if strings.EqualFold(all[i].name, name) {
			return &all[i], nil
		}
		for _, a := range all[i].aliases {
			if strings.EqualFold(a, name) {
				return &all[i], nil
			}
		}
	}
	var matches []int
	for i := range all {
		if len(name) < len(all[i].name) && strings.EqualFold(all[i].name[:len(name)], name) {
			matches = append(matches, i)
		}
	}
	switch len(matches) {
	case 0:
		return nil, errParamNotFound(c.name, name)
	case 1:
		return &all[matches[0]], nil
	}
	ms := make([]string, len(matches))
	for i, m := range matches {
		ms[i] = all[m].name
	}
	return nil, errParamAmbiguous(c.name, name, ms)
}

// wireArg applies the bootstrap's ConvertTo-Arg to a value decoded from the
// request's JSON: object → listEdit, array → []string.
func wireArg(v any) any {
	switch v := v.(type) {
	case map[string]any:
		var e listEdit
		for k, x := range v {
			switch strings.ToLower(k) {
			case "add":
				e.add = append(e.add, wireStrings(x)...)
			case "remove":
				e.remove = append(e.remove, wireStrings(x)...)
			}
		}
		return e
	case []any:
		return wireStrings(v)
	}
	return v
}

// wireStrings is [string[]]@($v).
func wireStrings(v any) []string {
	switch v := v.(type) {
	case nil:
		return nil
	case []any:
		out := make([]string, len(v))
		for i, x := range v {
			out[i] = psString(x)
		}
		return out
	case []string:
		return v
	}
	return []string{psString(v)}
}

// psString is PowerShell's [string] conversion of a JSON-decoded value.
func psString(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case bool:
		if v {
			return "True"
		}
		return "False"
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case json.Number:
		return v.String()
	case []any:
		parts := make([]string, len(v))
		for i, x := range v {
			parts[i] = psString(x)
		}
		return strings.Join(parts, " ")
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			keys[i] = k + "=" + psString(v[k])
		}
		return "@{" + strings.Join(keys, "; ") + "}"
	}
	return fmt.Sprint(v)
}

// netTypeOf names the .NET type the bootstrap passes for a wire value.
func netTypeOf(v any) string {
	switch v := v.(type) {
	case string:
		return "System.String"
	case bool:
		return "System.Boolean"
	case float64:
		if v == math.Trunc(v) && math.Abs(v) <= math.MaxInt32 {
			return "System.Int32"
		}
		if v == math.Trunc(v) {
			return "System.Int64"
		}
		return "System.Double"
	case json.Number:
		if strings.ContainsAny(string(v), ".eE") {
			return "System.Double"
		}
		if n, err := v.Int64(); err == nil && n >= math.MinInt32 && n <= math.MaxInt32 {
			return "System.Int32"
		}
		return "System.Int64"
	case []string:
		return "System.String[]"
	case listEdit:
		return "System.Collections.Hashtable"
	}
	return "System.Object"
}

// number reports the numeric value of a wire value.
func number(v any) (float64, bool) {
	switch v := v.(type) {
	case float64:
		return v, true
	case json.Number:
		f, err := v.Float64()
		return f, err == nil
	}
	return 0, false
}

func convertArg(cmd string, p *param, v any) (any, *runspace.RemoteError) {
	switch p.ty {
	case tyIgnored:
		return psString(v), nil
	case tyString, tyFilter:
		switch v.(type) {
		case []string, listEdit:
			return nil, errNotSupportedConversion(cmd, p.name, netTypeOf(v), "System.String")
		}
		s := psString(v)
		if p.ty == tyFilter {
			if v == nil || s == "" {
				return nil, errArgEmpty(cmd, p.name)
			}
			f, ferr := parseFilter(s)
			if ferr != nil {
				return nil, errFilter(cmd, ferr)
			}
			return f, nil
		}
		return s, nil
	case tyIdentity:
		switch v.(type) {
		case nil:
			return nil, errArgNull(cmd, p.name)
		case []string, listEdit:
			return nil, errNotSupportedConversion(cmd, p.name, netTypeOf(v), p.netType)
		}
		s := psString(v)
		if strings.TrimSpace(s) == "" {
			return nil, &runspace.RemoteError{Type: typeParamValidation, Category: "InvalidData",
				FQID: "ParameterArgumentValidationErrorEmptyStringNotAllowed," + cmd,
				Msg:  fmt.Sprintf("Cannot bind argument to parameter '%s' because it is an empty string.", p.name)}
		}
		return s, nil
	case tySwitch, tyBool:
		to := "System.Boolean"
		if p.ty == tySwitch {
			to = "System.Management.Automation.SwitchParameter"
		}
		switch v := v.(type) {
		case bool:
			return v, nil
		case nil:
			if p.ty == tySwitch {
				return false, nil
			}
		default:
			if f, ok := number(v); ok {
				return f != 0, nil
			}
		}
		return nil, errBoolTransform(cmd, p.name, netTypeOf(v), to)
	case tyMulti, tySMTPMulti:
		var ch ListChange
		switch v := v.(type) {
		case listEdit:
			ch = ListChange{Add: v.add, Remove: v.remove}
		case nil:
			ch = ListChange{Set: true}
		case []string:
			ch = ListChange{Set: true, Values: v}
		default:
			ch = ListChange{Set: true, Values: []string{psString(v)}}
		}
		if p.ty == tySMTPMulti {
			for _, list := range [][]string{ch.Values, ch.Add, ch.Remove} {
				for _, a := range list {
					if !validSMTP(a) {
						return nil, &runspace.RemoteError{Type: typeArgTransform, Category: "InvalidData",
							FQID: "ParameterArgumentTransformationError," + cmd,
							Msg: fmt.Sprintf("Cannot process argument transformation on parameter '%s'. Cannot convert value \"%s\" to type \"%s\". Error: \"%s\"",
								p.name, a, p.netType, invalidSMTP(a).msg)}
					}
				}
			}
		}
		return ch, nil
	case tyResultSize:
		const to = "Microsoft.Exchange.Data.Unlimited`1[System.UInt32]"
		switch v.(type) {
		case []string, listEdit, bool, nil:
			return nil, errConvertValue(cmd, p.name, psString(v), to, "Invalid cast from '"+netTypeOf(v)+"' to 'Unlimited`1'.")
		}
		s := strings.TrimSpace(psString(v))
		if strings.EqualFold(s, "Unlimited") {
			return int64(-1), nil
		}
		n, err := strconv.ParseFloat(s, 64)
		if err != nil || n != math.Trunc(n) || n > math.MaxUint32 || math.IsNaN(n) {
			return nil, errConvertValue(cmd, p.name, s, to, "Input string was not in a correct format.")
		}
		if n < 1 {
			return nil, errRangeMin(cmd, p.name, s, 1)
		}
		return int64(n), nil
	case tyEnum:
		if v == nil {
			return nil, errArgNull(cmd, p.name)
		}
		if f, ok := number(v); ok && f == math.Trunc(f) && f >= 0 && int(f) < len(p.enum) {
			return p.enum[int(f)], nil
		}
		s := psString(v)
		for _, e := range p.enum {
			if strings.EqualFold(strings.TrimSpace(s), e) {
				return e, nil
			}
		}
		return nil, &runspace.RemoteError{Type: typeParamBinding, Category: "InvalidArgument", FQID: "CannotConvertArgumentNoMessage," + cmd,
			Msg: fmt.Sprintf("Cannot bind parameter '%s'. Cannot convert value \"%s\" to type \"%s\". Error: \"Unable to match the identifier name %s to a valid enumerator name. Specify one of the following enumerator names and try again:\r\n%s\"",
				p.name, s, p.netType, s, strings.Join(p.enum, ", "))}
	}
	panic("exsim: unknown parameter type")
}
