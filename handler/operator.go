package handler

import (
	"mime"
	"net/http"
)

// operatorProtection keeps web pages an operator's browser visits from
// acting with the operator's credentials on the admin API, River UI and the
// console.
//
//   - Cross-origin writes are refused with 403 by Go's
//     http.CrossOriginProtection: it reads Sec-Fetch-Site (sent by every
//     browser since 2023), or compares Origin with Host. GET, HEAD and
//     OPTIONS pass; nothing under these prefixes changes state on them.
//     Requests without either header (scripts, curl, the CLI) pass too:
//     they carry no cookies or cached Basic credentials a page could
//     borrow.
//   - No page may frame them (X-Frame-Options: DENY and CSP frame-ancestors
//     'none'), so a page cannot trick an operator into clicking River UI's
//     or the console's buttons inside a frame.
type operatorProtection struct {
	cop *http.CrossOriginProtection
}

func newOperatorProtection() *operatorProtection {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		writeError(w, errorf(http.StatusForbidden, "cross-origin request refused: a page from another site cannot act on the admin surface (its Sec-Fetch-Site or Origin header says it did not come from this origin); scripts and the CLI, which send neither header, are not affected"))
	}))
	return &operatorProtection{cop: cop}
}

// wrap puts next behind the protection.
func (p *operatorProtection) wrap(next http.Handler) http.Handler {
	protected := p.cop.Handler(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", "frame-ancestors 'none'")
		protected.ServeHTTP(w, r)
	})
}

// requireJSON answers 415 and returns false unless r says its body is
// JSON. Admin endpoints that read a body call it, so that a body sent as
// text/plain or a form (which a browser sends cross-site without asking the
// server first) is never acted on.
func requireJSON(w http.ResponseWriter, r *http.Request) bool {
	mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err == nil && mediaType == "application/json" {
		return true
	}
	writeError(w, errorf(http.StatusUnsupportedMediaType, "this endpoint takes a JSON body: send Content-Type: application/json"))
	return false
}
