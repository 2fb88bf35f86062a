'use strict';
// The jobs table (polled every 2 s, filterable by state) and the submit form.
(() => {
  const {api, el, num, pct, duration, fraction, eta, totalImagesPerSec} = RX;
  const body = document.getElementById('jobs-body');
  const status = document.getElementById('jobs-status');
  const filter = document.getElementById('state-filter');

  function progressCell(j) {
    const p = j.progress || {};
    const f = fraction(j);
    const text = p.epoch == null ? '-' : `epoch ${p.epoch}/${p.epochs} · step ${p.step}/${p.steps_per_epoch}`;
    return el('td', {class: 'progress'},
              el('progress', {max: 1, value: f == null ? 0 : f}), ' ', f == null ? '' : (100 * f).toFixed(0) + '% ',
              el('span', {class: 'muted'}, text));
  }

  function row(j) {
    const link = el('a', {href: '/ui/job.html?id=' + encodeURIComponent(j.id)}, j.id);
    return el('tr', {'data-id': j.id, 'data-state': j.state},
              el('td', {}, link), el('td', {}, j.name), el('td', {}, el('span', {class: 'state ' + j.state}, j.state)),
              el('td', {}, j.owner), el('td', {class: 'num'}, j.world_size), progressCell(j),
              el('td', {class: 'num'}, duration(eta(j))), el('td', {class: 'num'}, pct(j.test_accuracy)),
              el('td', {class: 'num'}, num(totalImagesPerSec(j.ranks), 5)),
              el('td', {}, (j.created_at || '').replace('T', ' ').replace('Z', '')));
  }

  async function refresh() {
    const q = filter.value ? '&state=' + encodeURIComponent(filter.value) : '';
    try {
      const page = await api('/v1/jobs?limit=200' + q);
      body.replaceChildren(...page.jobs.map(row));
      status.textContent = `${page.total} job(s), updated ${new Date().toLocaleTimeString()}`;
      status.classList.remove('error');
    } catch (e) {
      status.textContent = e.message;
      status.classList.add('error');
    }
  }

  function parseOverrides(text) {
    const out = {};
    text.split('\n').forEach((line, i) => {
      line = line.trim();
      if (!line || line.startsWith('#')) return;
      const eq = line.indexOf('=');
      if (eq <= 0) throw new Error(`overrides line ${i + 1}: expected key=value, got "${line}"`);
      const key = line.slice(0, eq).trim(), raw = line.slice(eq + 1).trim();
      let value = raw;
      try { value = JSON.parse(raw); } catch (e) { /* a plain string */ }
      out[key] = value;
    });
    return out;
  }

  async function submit() {
    const msg = document.getElementById('submit-status');
    msg.classList.remove('error');
    try {
      const req = {config: document.getElementById('submit-config').value.trim(),
                   ranks: Number(document.getElementById('submit-ranks').value)};
      const name = document.getElementById('submit-name').value.trim();
      if (name) req.name = name;
      const overrides = parseOverrides(document.getElementById('submit-overrides').value);
      if (Object.keys(overrides).length) req.overrides = overrides;
      const job = await api('/v1/jobs', {method: 'POST', body: JSON.stringify(req)});
      msg.replaceChildren('submitted ', el('a', {id: 'submitted-link', href: '/ui/job.html?id=' + encodeURIComponent(job.id)},
                                            job.id));
      refresh();
    } catch (e) {
      msg.textContent = e.message;
      msg.classList.add('error');
    }
  }

  RX.initTokenBox();
  filter.addEventListener('change', refresh);
  document.getElementById('submit').addEventListener('click', submit);
  document.getElementById('token-save').addEventListener('click', refresh);
  RX.poll(refresh, 2000);
})();
