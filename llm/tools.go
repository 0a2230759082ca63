package llm

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
)

// ErrBadMessage is matched by the error of [Model.Chat] when the messages
// cannot be rendered: a role or field the model's chat template does not
// take, or a conversation its template refuses (its raise_exception, such
// as "Conversation roles must alternate"). The error names the message and
// the problem: a caller's mistake, not the engine's.
var ErrBadMessage = errors.New("llm: message not accepted")

// ToolCall is a function call made by the assistant, in a [Message] of
// [RoleAssistant].
type ToolCall struct {
	ID        string // the call's id, which the tool result's ToolCallID repeats
	Name      string // the function's name
	Arguments string // the arguments as JSON text, usually an object
}

// Tool is a function the model may call, for [ChatOptions.Tools].
type Tool struct {
	Name        string          // letters, digits, '_' and '-', at most 64
	Description string          // optional: what the function does
	Parameters  json.RawMessage // optional: a JSON schema object of its arguments
}

var toolName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// checkTools refuses tools a template could not render faithfully.
func checkTools(tools []Tool) error {
	for i, t := range tools {
		if !toolName.MatchString(t.Name) {
			return fmt.Errorf("%w: Tools[%d].Name %q: use 1 to 64 letters, digits, '_' or '-'", ErrBadOption, i, t.Name)
		}
		if slices.ContainsFunc(tools[:i], func(u Tool) bool { return u.Name == t.Name }) {
			return fmt.Errorf("%w: Tools[%d].Name %q appears twice", ErrBadOption, i, t.Name)
		}
		if len(t.Parameters) > 0 {
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(t.Parameters, &obj); err != nil {
				return fmt.Errorf("%w: Tools[%d] (%s).Parameters is not a JSON object: %v", ErrBadOption, i, t.Name, err)
			}
		}
	}
	return nil
}

// checkMessages refuses messages no template can take: the role and
// the fields that go with it. What a template accepts beyond that is its
// own business (see template.render).
func checkMessages(msgs []Message) error {
	if len(msgs) == 0 {
		return fmt.Errorf("%w: no messages", ErrBadMessage)
	}
	for i, m := range msgs {
		switch m.Role {
		case RoleSystem, RoleUser, RoleAssistant, RoleTool:
		default:
			return fmt.Errorf("%w: message %d has role %q; want %q, %q, %q or %q", ErrBadMessage, i, m.Role, RoleSystem, RoleUser, RoleAssistant, RoleTool)
		}
		if len(m.ToolCalls) > 0 && m.Role != RoleAssistant {
			return fmt.Errorf("%w: message %d has role %q and ToolCalls; only the assistant's messages make calls", ErrBadMessage, i, m.Role)
		}
		if m.ToolCallID != "" && m.Role != RoleTool {
			return fmt.Errorf("%w: message %d has role %q and a ToolCallID; only %q messages answer calls", ErrBadMessage, i, m.Role, RoleTool)
		}
		for j, c := range m.ToolCalls {
			if c.Name == "" {
				return fmt.Errorf("%w: message %d: ToolCalls[%d] has no Name", ErrBadMessage, i, j)
			}
		}
	}
	return nil
}
