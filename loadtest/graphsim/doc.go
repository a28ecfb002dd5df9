// Package graphsim manages a simulated Microsoft Graph and Entra ID token
// endpoint that serve a population.Population, so the connector's MDM client
// can be tested, benchmarked and demonstrated against a real HTTP server.
//
// It serves these endpoints, shaped like the real ones:
//
//	POST /{tenant}/oauth2/v2.0/token                                   client credentials (secret or certificate assertion)
//	GET  /v1.0/deviceManagement/managedDevices                         $select, $top (≤ 1000), @odata.nextLink
//	GET  /v1.0/groups/{id}/transitiveMembers                           directoryObjects with @odata.type (a nested group, then users); $select, $top (≤ 999)
//	GET  /v1.0/groups/{id}/transitiveMembers/microsoft.graph.user      the OData cast: an advanced query, refused with 400
//	                                                                   Request_UnsupportedQuery unless ConsistencyLevel: eventual
//	                                                                   and $count=true are sent (then @odata.count)
//
// Users and device records carry the user's Entra object id
// (population.Mailbox.EntraID: a member's id, a managedDevice's userId),
// never the AD guid. SetGrants models the app's permissions: without
// User.Read.All, user members come with only @odata.type and id, every
// other property null, as Graph's permissions overview describes
// ("Limited information returned for inaccessible member objects",
// microsoftgraph/microsoft-graph-docs-contrib concepts/permissions-overview.md);
// without GroupMember.Read.All or DeviceManagementManagedDevices.Read.All
// the listing answers 403 with Graph's or Intune's error.
//
// Errors carry the real JSON shapes: the token endpoint answers
// {"error":"invalid_client","error_description":"AADSTS7000215: …",
// "error_codes":[7000215],…}; Graph answers
// {"error":{"code":"…","message":"…","innerError":{…}}}.
//
// Paging is consistent: the first request of a listing captures the current
// version of the population, and every @odata.nextLink of that listing (an
// opaque $skiptoken) reads the same version, even while Update changes the
// population underneath. A nextLink stays valid for SessionTTL, so a client
// may retry it after a failure.
//
// Faults are injected with the exported setters (Throttle, FailNext,
// SetErrorRate, TruncateNext, EmptyPages, NextLinkLoop, DropMemberIDs, SetOutage,
// SetTokenDown, SetLatency, Reset); all methods of Server are safe for
// concurrent use.
//
// Lifecycle: New, then either mount the Server as an http.Handler (for
// example in httptest.NewServer) or call Start to listen on 127.0.0.1; Close
// stops the listener, resets what is still being answered and waits for the
// serving goroutine.
package graphsim
