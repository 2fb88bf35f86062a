'use strict';
// One job: summary, curves, per-rank bars, straggler/hang alerts, attempts (restarts), the trace
// download, resolved config and log tail.
// Polls every 2 s while the job is live; a finished job renders once from its stored run record
// (GET .../result, kept on disk by the coordinator, so it survives a restart) and stops polling.
(() => {
  const {api, apiBlob, el, num, pct, duration, mib, eta, totalImagesPerSec, isTerminal} = RX;
  const PHASES = ['data_wait', 'forward', 'backward', 'comm_exposed', 'optimizer'];
  const id = new URLSearchParams(location.search).get('id') || '';
  const page = {job: null, metrics: null, result: null, renders: 0};
  window.rxPage = page;  // read by the browser test
  const charts = {
    stepLoss: RXCharts.line('chart-step-loss', ['loss']),
    epoch: RXCharts.line('chart-epoch', ['train loss', 'test accuracy']),
    lr: RXCharts.line('chart-lr', ['learning rate']),
    ips: RXCharts.bar('chart-ips', false, 'images/s'),
    mem: RXCharts.bar('chart-mem', false, 'MiB'),
    split: RXCharts.bar('chart-split', true, 'ms per step'),
  };
  window.rxCharts = charts;
  const status = document.getElementById('job-status');

  // Logged-step reports carry no test accuracy; the end-of-epoch report does.
  function stepPoints(points) {
    return points.filter(p => typeof p.loss === 'number' && typeof p.test_accuracy !== 'number' &&
                              p.steps_per_epoch && p.epoch != null)
        .map(p => ({x: (p.epoch - 1) * p.steps_per_epoch + p.step, y: p.loss}));
  }

  function epochSeries(points, result) {
    if (result && Array.isArray(result.epochs) && result.epochs.length) {
      const e = result.epochs;
      return [{label: 'train loss', axis: 0, points: e.map(r => ({x: r.epoch, y: r.train_loss}))},
              {label: 'test accuracy', axis: 1,
               points: e.filter(r => typeof r.test_accuracy === 'number').map(r => ({x: r.epoch, y: r.test_accuracy}))}];
    }
    const ends = points.filter(p => typeof p.test_accuracy === 'number');
    return [{label: 'train loss', axis: 0, points: ends.map(p => ({x: p.epoch, y: p.loss}))},
            {label: 'test accuracy', axis: 1, points: ends.map(p => ({x: p.epoch, y: p.test_accuracy}))}];
  }

  function straggler(points, result) {
    // The record's (whole run) when stored, else the latest end-of-epoch report's.
    let s = result && result.reducer ? result.reducer.straggler : null;
    for (const p of points) if (!result && p.straggler && typeof p.straggler === 'object') s = p.straggler;
    return s && typeof s.rank === 'number' ? s : null;
  }

  // Any hang report: a "hang" entry in the record or a report, or an error that says so.
  function hang(job, points, result) {
    if (job.hang && typeof job.hang === 'object') return hangText(job.hang);
    if (result && result.hang) return JSON.stringify(result.hang);
    for (const p of points) if (p.type === 'hang' || p.hang) return JSON.stringify(p.hang || p);
    if (job.error && /hang|timed out|timeout/i.test(job.error)) return job.error;
    return null;
  }

  // A stored hang report (issue 14; fields as in coordinator/jobs/job_faults.cpp): the stuck collective,
  // the ranks that never entered it or stopped answering, who noticed.
  function hangText(h) {
    const c = h.collective && typeof h.collective === 'object' ? h.collective : {};
    const parts = [`collective #${c.seq == null ? '?' : c.seq}` + (c.kind ? ` (${c.kind})` : '')];
    if (Array.isArray(h.missing) && h.missing.length) parts.push(`ranks ${h.missing.join(', ')} never entered it`);
    const silent = (Array.isArray(h.ranks) ? h.ranks : []).filter(r => r && r.responding === false).map(r => r.rank);
    if (silent.length) parts.push(`not responding: ranks ${silent.join(', ')}`);
    if (h.detected_by != null) parts.push(`detected by rank ${h.detected_by}`);
    if (typeof h.waited_s === 'number') parts.push(`after ${h.waited_s.toFixed(1)} s`);
    // The worker's own sentence, when it sent one, says the most (host, pid, where each rank was).
    return typeof h.message === 'string' && h.message ? h.message : parts.join('; ');
  }

  // One row per attempt (issue 14's restarts): when it ran, how it ended, what it resumed from.
  function renderAttempts(job) {
    const list = Array.isArray(job.attempts) ? job.attempts : [];
    document.getElementById('attempts-section').hidden = list.length === 0;
    const cell = v => el('td', {}, v == null || v === '' ? '-' : String(v));
    document.getElementById('attempts-body').replaceChildren(...list.map(a => el('tr', {},
        cell(a.attempt), cell(a.started_at), cell(a.ended_at), cell(a.exit_code), cell(a.resumed_from),
        el('td', {class: a.cause && a.cause !== 'succeeded' ? 'error' : ''}, a.cause == null ? '-' : String(a.cause)))));
  }

  // [Trace download] Fetched with the token header (never in a URL) and saved from a blob URL.
  async function downloadTrace(ev) {
    if (ev) ev.preventDefault();
    const msg = document.getElementById('trace-status');
    try {
      const blob = await apiBlob('/v1/jobs/' + encodeURIComponent(id) + '/trace');
      const url = URL.createObjectURL(blob);
      const a = el('a', {href: url, download: `trace-${id}.json`});
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      msg.textContent = `trace-${id}.json: ${blob.size} bytes`;
      msg.classList.remove('error');
      page.traceBytes = blob.size;
    } catch (e) {
      msg.textContent = e.message;
      msg.classList.add('error');
    }
  }

  function renderSummary(job, result) {
    const p = job.progress || {};
    const rows = [
      ['Name', job.name], ['State', el('span', {class: 'state ' + job.state, id: 'state'}, job.state)],
      ['Owner', job.owner], ['Ranks', job.world_size],
      ['Progress', p.epoch == null ? '-' : `epoch ${p.epoch}/${p.epochs}, step ${p.step}/${p.steps_per_epoch}`],
      ['ETA', duration(eta(job))], ['Train loss', num(job.loss)], ['Test accuracy', pct(job.test_accuracy)],
      ['Images/s (all ranks)', num(totalImagesPerSec(result ? result.ranks : job.ranks), 5)],
      ['Created', job.created_at], ['Started', job.started_at || '-'], ['Finished', job.finished_at || '-'],
      ['Exit code', job.exit_code == null ? '-' : job.exit_code]];
    if (job.restarts !== undefined) rows.push(['Restarts', job.restarts]);
    if (result) {
      rows.push(['Best test accuracy', pct(result.best_test_accuracy)], ['Wall time', duration(result.wall_seconds)],
                ['Exposed comm share', pct(result.exposed_comm_share)]);
    }
    if (job.error) rows.push(['Error', el('span', {class: 'error'}, job.error)]);
    document.getElementById('summary-body').replaceChildren(...rows.map(([k, v]) => el('tr', {}, el('th', {}, k),
                                                                                        el('td', {}, v))));
  }

  function render() {
    const {job, result} = page;
    const points = (page.metrics && page.metrics.points) || [];
    renderSummary(job, result);
    renderAttempts(job);
    document.getElementById('cancel').disabled = isTerminal(job.state);
    // The run record's config says whether the job was traced (rank 0 merges the trace before it reports).
    const traced = !!(result && result.config && result.config.output && result.config.output.trace === true);
    document.getElementById('trace-box').hidden = !traced;

    RXCharts.setLines(charts.stepLoss, 'global step', [{label: 'train loss', points: stepPoints(points)}]);
    const steps = points.find(p => p.steps_per_epoch);
    charts.stepLoss.options.scales.x.title.text = 'global step' + (steps ? ` (${steps.steps_per_epoch} per epoch)` : '');
    RXCharts.setLines(charts.epoch, 'epoch', epochSeries(points, result));
    const epochs = result && Array.isArray(result.epochs) ? result.epochs : [];
    RXCharts.setLines(charts.lr, 'epoch', [{label: 'learning rate (end of epoch)',
                                             points: epochs.filter(e => typeof e.lr === 'number').map(e => ({x: e.epoch, y: e.lr}))}]);

    const ranks = ((result && result.ranks) || job.ranks || []).slice().sort((a, b) => a.rank - b.rank);
    const labels = ranks.map(r => 'rank ' + r.rank);
    const s = straggler(points, result);
    const hi = s && ranks.length > 1 ? ranks.findIndex(r => r.rank === s.rank) : -1;
    RXCharts.setBars(charts.ips, labels, [{label: 'images/s', values: ranks.map(r => r.images_per_sec)}], hi);
    RXCharts.setBars(charts.mem, labels, [{label: 'peak memory (MiB)', values: ranks.map(r => mib(r.peak_memory_bytes))}], hi);
    const withSplit = ranks.filter(r => r.step_time_ms);
    RXCharts.setBars(charts.split, withSplit.map(r => 'rank ' + r.rank),
                     PHASES.map(ph => ({label: ph.replace('_', ' '), values: withSplit.map(r => r.step_time_ms[ph])})),
                     s ? withSplit.findIndex(r => r.rank === s.rank) : -1);

    const alerts = [];
    if (hi >= 0) {
      alerts.push(el('div', {class: 'alert', id: 'straggler'},
                     `Straggler: rank ${s.rank}, gradients ready ${num(s.mean_lag_ms, 3)} ms after the earliest rank on ` +
                     `average over ${s.steps_measured} steps (outlined in black below)`));
    }
    const h = hang(job, points, result);
    if (h) alerts.push(el('div', {class: 'alert error', id: 'hang'}, 'Hang / failure report: ' + h));
    document.getElementById('alerts').replaceChildren(...alerts);
    if (result && result.config)
      document.getElementById('config').replaceChildren(JSON.stringify(result.config, null, 2));
    page.renders++;
  }

  async function refresh() {
    try {
      const [job, metrics, logs] = await Promise.all([
        api('/v1/jobs/' + encodeURIComponent(id)), api('/v1/jobs/' + encodeURIComponent(id) + '/metrics'),
        api('/v1/jobs/' + encodeURIComponent(id) + '/logs?tail=200')]);
      // Only a succeeded job is sure to have a record; asking earlier would be a 404 on every poll.
      if (job.state === 'succeeded' && !page.result) page.result = await api('/v1/jobs/' + encodeURIComponent(id) + '/result');
      Object.assign(page, {job, metrics});
      const pre = document.getElementById('logs');
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent = logs;
      if (atEnd) pre.scrollTop = pre.scrollHeight;
      render();
      status.textContent = `updated ${new Date().toLocaleTimeString()}` + (isTerminal(job.state) ? ' (final)' : '');
      status.classList.remove('error');
      return !isTerminal(job.state);  // false stops polling
    } catch (e) {
      status.textContent = e.message;
      status.classList.add('error');
      return e.status !== 404;
    }
  }

  async function cancel() {
    const msg = document.getElementById('cancel-status');
    try {
      const j = await api('/v1/jobs/' + encodeURIComponent(id) + '/cancel', {method: 'POST', body: '{}'});
      msg.textContent = `cancel requested (state ${j.state})`;
      msg.classList.remove('error');
    } catch (e) {
      msg.textContent = e.message;
      msg.classList.add('error');
    }
    if (stop) stop();
    stop = RX.poll(refresh, 2000);
  }

  document.getElementById('job-id').textContent = id;
  document.title = 'ResNeXt job ' + id;
  RX.initTokenBox();
  document.getElementById('cancel').addEventListener('click', cancel);
  document.getElementById('trace-link').addEventListener('click', downloadTrace);
  let stop = null;
  if (!/^[A-Za-z0-9_-]{1,100}$/.test(id)) {
    status.textContent = 'no valid job id in the address (job.html?id=...)';
    status.classList.add('error');
  } else {
    stop = RX.poll(refresh, 2000);
    document.getElementById('token-save').addEventListener('click', () => { if (stop) stop(); stop = RX.poll(refresh, 2000); });
  }
})();
