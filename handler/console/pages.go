package console

import (
	"fmt"
	"html/template"
)

// pageNames are the templates in templates/, each parsed with the layout.
var pageNames = []string{"overview", "dead-letters", "confirm-retry", "dead-letter", "events", "event", "confirm-replay", "routes", "error"}

func parsePages() (map[string]*template.Template, error) {
	fm := template.FuncMap{
		"int64": func(i int) int64 { return int64(i) },
		"derefF": func(f *float64) float64 {
			if f == nil {
				return 0
			}
			return *f
		},
	}
	for k, v := range funcs {
		fm[k] = v
	}
	pages := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(fm).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: error parsing template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}
