package s3load

import "context"

// fetch downloads part p into place. A part that comes with a body (the
// first one) is read from it; otherwise it is requested.
func (d *download) fetch(ctx context.Context, p *part) error {
	if p.body == nil {
		var err error
		if p, err = d.get(ctx, p.start, p.end, 1); err != nil {
			return err
		}
	}
	_, err := d.copyPart(ctx, p)
	return err
}

// written accounts for bytes b, just written after the bytes of part p
// already in place.
func (d *download) written(p *part, b []byte) {
	d.progress(int64(len(b)))
}
