package console

import (
	"fmt"
	"net/http"

	outbox "github.com/webhook-outbox/webhook-outbox"
)

type routesData struct {
	Routes []routeCard
}

func (c *Console) routesPage(w http.ResponseWriter, r *http.Request) {
	statuses, err := c.op.Routes(r.Context())
	if err != nil {
		c.fail(w, r, err)
		return
	}
	var data routesData
	for _, s := range statuses {
		card := routeCard{RouteStatus: s, DeadLettersURL: Prefix + "/dead-letters?route=" + s.Name}
		card.Backlog = s.Backlog.Available + s.Backlog.Retryable + s.Backlog.Scheduled + s.Backlog.Running
		if rc := c.routes[s.Name]; rc != nil {
			card.MaxAttempts, card.GiveUpAfter = rc.Retry.MaxAttempts, rc.Retry.GiveUpAfter.D()
		}
		data.Routes = append(data.Routes, card)
	}
	c.render(w, r, http.StatusOK, "routes", "Routes", data)
}

func (c *Console) pause(w http.ResponseWriter, r *http.Request)  { c.setPaused(w, r, true) }
func (c *Console) resume(w http.ResponseWriter, r *http.Request) { c.setPaused(w, r, false) }

func (c *Console) setPaused(w http.ResponseWriter, r *http.Request, paused bool) {
	route := r.PathValue("route")
	action, do := "resume route", c.op.Resume
	if paused {
		action, do = "pause route", c.op.Pause
	}
	if err := do(r.Context(), route); err != nil {
		c.logAction(r, action, "route", route, "error", err)
		if outbox.ErrorCode(err) == outbox.ENOTFOUND {
			err = outbox.Errorf(outbox.EINVALID, "%s", userMessage(err))
		}
		c.fail(w, r, err)
		return
	}
	c.logAction(r, action, "route", route)
	msg := fmt.Sprintf("Route %s is paused on every replica: intake goes on, deliveries wait until you resume it.", route)
	if !paused {
		msg = fmt.Sprintf("Route %s is resumed: its waiting events are being delivered.", route)
	}
	c.redirect(w, r, Prefix+"/routes", msg)
}
