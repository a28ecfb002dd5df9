package mdm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Probe sizes: enough to see whether properties come back, small enough
// for a check that runs in a second.
const (
	probeDevices = 50
	probeMembers = 100 // nested groups and devices may come first
)

// ProbeResult is what Probe learned about the application's permissions
// from one page of managed devices and one page of each group's members.
type ProbeResult struct {
	Devices              int   // devices on the page read
	DevicesWithoutUserID int   // of those, with a null userId (a device without a primary user has none)
	DevicesErr           error // the read failed (a 403 means the permission is missing)
	Groups               []GroupProbe
}

// GroupProbe is one group's first page of members.
type GroupProbe struct {
	ID      string
	Users   int   // user members on the page
	Unnamed int   // of those, without userPrincipalName and mail
	NoID    int   // of those, without a usable object id
	Err     error // the read failed
}

// Finding is one conclusion of a probe, for an administrator.
type Finding struct {
	Fatal      bool   // the sync cannot work (it would stop before any write)
	Permission string // the application permission to grant, if that is the remedy
	Text       string
}

// Findings turns the probe into conclusions: a 403 or members without ids
// are fatal and name the permission; members whose UPN and mail come back
// null name User.Read.All (the sync works, but users without an enrolled
// device cannot be scoped: ScopeUnknown).
func (p *ProbeResult) Findings() []Finding {
	var out []Finding
	denied := func(err error) bool {
		var ge *GraphError
		return errors.As(err, &ge) && (ge.Status == http.StatusForbidden ||
			(ge.Status == http.StatusUnauthorized && ge.Code == "Authorization_RequestDenied"))
	}
	switch {
	case p.DevicesErr != nil && denied(p.DevicesErr):
		out = append(out, Finding{Fatal: true, Permission: PermDevices, Text: fmt.Sprintf(
			"managedDevices: access denied: grant the application %s (application permission) and admin consent: %v", PermDevices, p.DevicesErr)})
	case p.DevicesErr != nil:
		out = append(out, Finding{Fatal: true, Text: "managedDevices: " + p.DevicesErr.Error()})
	case p.Devices > 0 && p.DevicesWithoutUserID == p.Devices:
		out = append(out, Finding{Text: fmt.Sprintf("managedDevices: none of %d devices read has a userId: group members "+
			"can be matched to mailboxes only by userPrincipalName and mail, which need %s", p.Devices, PermUsers), Permission: PermUsers})
	}
	for _, g := range p.Groups {
		switch {
		case g.Err != nil && denied(g.Err):
			out = append(out, Finding{Fatal: true, Permission: PermMembers, Text: fmt.Sprintf(
				"group %s: access denied: grant the application %s (application permission) and admin consent: %v", g.ID, PermMembers, g.Err)})
		case g.Err != nil:
			out = append(out, Finding{Fatal: true, Text: fmt.Sprintf("group %s: %v", g.ID, g.Err)})
		case g.NoID > 0:
			out = append(out, Finding{Fatal: true, Permission: PermMembers, Text: fmt.Sprintf(
				"group %s: %d of %d members came without an object id; the sync joins on it and would stop: check %s", g.ID, g.NoID, g.Users, PermMembers)})
		case g.Unnamed > 0:
			out = append(out, Finding{Permission: PermUsers, Text: fmt.Sprintf(
				"group %s: %d of %d members came with userPrincipalName and mail null (Graph's limited information for "+
					"objects the app may not read): grant %s (or User.ReadBasic.All). Until then a member is matched to a mailbox only through a "+
					"device record carrying its id, and the devices of users without one are decided as ScopeUnknown", g.ID, g.Unnamed, g.Users, PermUsers)})
		}
	}
	return out
}

// Probe reads one page of managed devices and the first page of members
// of each group in groups, selecting what a snapshot selects, and reports
// what came back; it never fails as a whole, except when groups holds
// something that is not an object id or ctx ends. It is what
// `easconnector check` runs.
func (g *Graph) Probe(ctx context.Context, groups []string) (*ProbeResult, error) {
	ids, err := groupIDs(groups)
	if err != nil {
		return nil, err
	}
	r := &run{g: g, seen: make(map[string]bool)}
	res := &ProbeResult{}
	u := g.graphURL.String() + "/v1.0/deviceManagement/managedDevices?$select=" + deviceSelect + "&$top=" + strconv.Itoa(probeDevices)
	res.DevicesErr = r.page(ctx, endpointDevices, u, func() { res.Devices, res.DevicesWithoutUserID = 0, 0 }, func(dec *json.Decoder) error {
		var d device
		if err := decodeItem(dec, &d); err != nil {
			return err
		}
		res.Devices++
		if strings.TrimSpace(d.UserID) == "" {
			res.DevicesWithoutUserID++
		}
		return nil
	})
	for _, id := range ids {
		gp := GroupProbe{ID: id}
		u := g.graphURL.String() + "/v1.0/groups/" + url.PathEscape(id) + "/transitiveMembers?$select=" + memberSelect +
			"&$top=" + strconv.Itoa(probeMembers)
		gp.Err = r.page(ctx, endpointMembers, u, func() { gp.Users, gp.Unnamed, gp.NoID = 0, 0, 0 }, func(dec *json.Decoder) error {
			var m memberJSON
			if err := decodeItem(dec, &m); err != nil {
				return err
			}
			if m.Type != userType {
				return nil
			}
			gp.Users++
			mb, _, err := userMember(&m, gp.Users)
			switch {
			case err != nil:
				gp.NoID++ // the probe counts what the snapshot would refuse
			case !mb.Named():
				gp.Unnamed++
			}
			return nil
		})
		res.Groups = append(res.Groups, gp)
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
	}
	return res, ctx.Err()
}

// page reads the first page of a collection (with the snapshot's retry
// budget), calling begin before each attempt and item for each element;
// the nextLink is ignored.
func (r *run) page(ctx context.Context, endpoint, link string, begin func(), item func(*json.Decoder) error) error {
	_, err := r.get(ctx, endpoint, link, func(body io.Reader) (string, error) {
		begin()
		next, _, err := decodePage(body, item)
		return next, err
	})
	return err
}
