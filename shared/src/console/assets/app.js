/* The console (see pages.rs): one page, hash routes, no framework and no
 * build step. It signs in through /auth/, keeps the Cognito ID token in this
 * tab's sessionStorage (never localStorage, never a cookie), and calls the
 * /v1/ API with it. Every text that comes from the API is rendered with
 * textContent (through h() below), never as HTML. Credentials are
 * write-only: a form sends a credential only when one was typed, and the
 * page shows a stored one only as "set" with its fingerprint. */
'use strict';

(function () {
    const TOKEN_KEY = 'popularity-console.idToken';
    const TENANT_KEY = 'popularity-console.tenantId';
    const AFTER_KEY = 'popularity-console.after';

    // ------------------------------------------------------------------
    // DOM, text only

    /** An element: attributes (on* become listeners), then children
     *  (strings become text nodes; null and false are left out). */
    function h(tag, attributes, ...children) {
        const element = document.createElement(tag);
        for (const [name, value] of Object.entries(attributes || {})) {
            if (value === null || value === undefined || value === false) continue;
            if (name.startsWith('on') && typeof value === 'function') {
                element.addEventListener(name.slice(2), value);
            } else if (name === 'class') {
                element.className = value;
            } else if (['value', 'checked', 'disabled', 'hidden', 'selected', 'readOnly', 'required'].includes(name)) {
                element[name] = value;
            } else {
                element.setAttribute(name, value === true ? '' : String(value));
            }
        }
        append(element, children);
        return element;
    }

    function append(parent, children) {
        for (const child of children.flat(Infinity)) {
            if (child === null || child === undefined || child === false) continue;
            parent.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
        }
        return parent;
    }

    function clear(element) {
        while (element.firstChild) element.removeChild(element.firstChild);
        return element;
    }

    // ------------------------------------------------------------------
    // Formatting

    const KINDS = {
        'email': { label: 'Email', blurb: 'Reports as links in an email to your recipients.' },
        's3-role': { label: 'Amazon S3 — your role', blurb: 'We assume a role in your account that may write to your bucket.' },
        's3-keys': { label: 'Amazon S3 — access keys', blurb: 'We write with the access key of an IAM user you create.' },
        's3-bucket-policy': { label: 'Amazon S3 — bucket policy', blurb: 'Your bucket policy lets our delivery role write.' },
        'gcs': { label: 'Google Cloud Storage', blurb: 'We write with a service account key that may create objects in your bucket.' },
        'google-sheets': { label: 'Google Sheets', blurb: 'We keep the top rows of each report in tabs of your spreadsheet.' },
    };

    const STATE_LABELS = {
        'delivered': 'Delivered',
        'failed': 'Failed',
        'in-progress': 'In progress',
        'skipped': 'Skipped',
        'invalid': 'Invalid',
    };

    function kindLabel(type) {
        return (KINDS[type] && KINDS[type].label) || type || 'unknown type';
    }

    function pad(number) {
        return String(number).padStart(2, '0');
    }

    /** An ISO time as "2026-11-19 03:05 UTC". */
    function formatTime(iso) {
        if (!iso) return '—';
        const date = new Date(iso);
        if (Number.isNaN(date.getTime())) return String(iso);
        return `${date.getUTCFullYear()}-${pad(date.getUTCMonth() + 1)}-${pad(date.getUTCDate())} `
            + `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())} UTC`;
    }

    /** A run id (YYYYMMDDHHmmss) as the run's time. */
    function formatRun(runId) {
        const m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})$/.exec(runId || '');
        return m ? `${m[1]}-${m[2]}-${m[3]} ${m[4]}:${m[5]} UTC` : String(runId);
    }

    function formatBytes(bytes) {
        if (bytes === null || bytes === undefined) return '—';
        const units = ['B', 'KB', 'MB', 'GB', 'TB'];
        let value = Number(bytes);
        let unit = 0;
        while (value >= 1000 && unit < units.length - 1) {
            value /= 1000;
            unit += 1;
        }
        return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
    }

    function formatCount(count) {
        return count === null || count === undefined ? '—' : Number(count).toLocaleString('en-US');
    }

    function formatSeconds(seconds) {
        if (!seconds) return 'every run';
        const units = [[604800, 'week'], [86400, 'day'], [3600, 'hour'], [60, 'minute']];
        for (const [size, name] of units) {
            if (seconds % size === 0) {
                const n = seconds / size;
                return `every ${n === 1 ? '' : n + ' '}${name}${n === 1 ? '' : 's'}`;
            }
        }
        return `every ${seconds} s`;
    }

    function stateBadge(state) {
        return h('span', { class: `state ${state}` }, STATE_LABELS[state] || state);
    }

    // ------------------------------------------------------------------
    // Session: the ID token in sessionStorage only

    function token() {
        return sessionStorage.getItem(TOKEN_KEY);
    }

    /** The token's claims, for showing who is signed in and when it ends.
     *  Not a check: the API verifies every token. */
    function claims() {
        const value = token();
        if (!value) return null;
        try {
            const part = value.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
            const json = decodeURIComponent(Array.from(atob(part.padEnd(part.length + (4 - part.length % 4) % 4, '=')),
                (c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0')).join(''));
            return JSON.parse(json);
        } catch (error) {
            return null;
        }
    }

    function signedIn() {
        const c = claims();
        return Boolean(c && (!c.exp || c.exp * 1000 > Date.now()));
    }

    function isOperator() {
        const c = claims();
        return Boolean(c && Array.isArray(c['cognito:groups']) && c['cognito:groups'].includes('operators'));
    }

    function chosenTenant() {
        return isOperator() ? sessionStorage.getItem(TENANT_KEY) : null;
    }

    let flash = null;

    function signOut(message) {
        sessionStorage.removeItem(TOKEN_KEY);
        sessionStorage.removeItem(TENANT_KEY);
        state.me = null;
        state.version = null;
        flash = message ? { text: message, info: true } : null;
        go('#/sign-in');
    }

    // ------------------------------------------------------------------
    // The API

    const state = { me: null, version: null };

    class Problem extends Error {
        constructor(problem) {
            super(problem.detail || problem.title || 'The request failed');
            this.problem = problem;
        }
    }

    function withTenant(path) {
        const tenant = chosenTenant();
        if (!tenant || !path.startsWith('/v1/')) return path;
        return path + (path.includes('?') ? '&' : '?') + 'tenantId=' + encodeURIComponent(tenant);
    }

    /** Calls the API. Keeps the tenant document's version (ETag) of every
     *  answer, which the next change sends as If-Match. */
    async function api(method, path, body) {
        const headers = { 'Accept': 'application/json' };
        const current = token();
        if (current && path.startsWith('/v1/')) headers['Authorization'] = 'Bearer ' + current;
        if (body !== undefined) headers['Content-Type'] = 'application/json';
        if (method !== 'GET' && path.startsWith('/v1/') && state.version) headers['If-Match'] = state.version;
        let response;
        try {
            response = await fetch(withTenant(path), {
                method,
                headers,
                body: body === undefined ? undefined : JSON.stringify(body),
                cache: 'no-store',
                credentials: 'omit',
            });
        } catch (error) {
            throw new Problem({ title: 'No answer', status: 0, detail: 'The console could not be reached: check your connection and try again.' });
        }
        const etag = response.headers.get('ETag');
        if (etag) state.version = etag;
        const text = await response.text();
        let data = null;
        if (text) {
            try {
                data = JSON.parse(text);
            } catch (error) {
                data = null;
            }
        }
        if (!response.ok) {
            const problem = data && typeof data === 'object' && data.title
                ? data
                : { title: response.statusText || 'Error', status: response.status, detail: `The server answered ${response.status}.` };
            if (response.status === 401 && path.startsWith('/v1/')) {
                signOut('Your session ended: sign in again.');
            }
            if (response.status === 412) {
                // Someone else changed the settings: take the current version,
                // so that saving again applies this change on top of theirs.
                await refreshVersion();
            }
            throw new Problem(problem);
        }
        return data;
    }

    async function refreshVersion() {
        try {
            state.me = await api('GET', '/v1/me');
        } catch (error) {
            /* the caller shows the first problem */
        }
    }

    // ------------------------------------------------------------------
    // Problems, next to the fields they name

    /** The form field a problem path names: `recipients[2]` is `recipients`. */
    function fieldOf(path) {
        return String(path || '').replace(/\[\d+\].*$/, '').split('.')[0];
    }

    function clearProblems(form) {
        for (const old of form.querySelectorAll('.field-error')) old.remove();
        for (const input of form.querySelectorAll('[aria-invalid]')) {
            input.removeAttribute('aria-invalid');
            const hint = input.getAttribute('data-hint-id');
            if (hint) input.setAttribute('aria-describedby', hint); else input.removeAttribute('aria-describedby');
        }
        const summary = form.querySelector('.form-problem');
        if (summary) clear(summary).hidden = true;
    }

    /** Shows `error` in `form`: each field error below its field, the rest
     *  (and a connection test's checks) in the form's summary. */
    function showProblem(form, error) {
        clearProblems(form);
        const problem = error instanceof Problem ? error.problem : { title: 'Error', detail: String(error) };
        const summary = form.querySelector('.form-problem');
        const unplaced = [];
        let first = null;
        for (const item of problem.errors || []) {
            const wrapper = form.querySelector(`[data-field="${CSS.escape(fieldOf(item.path))}"]`);
            if (!wrapper) {
                unplaced.push(item);
                continue;
            }
            const id = `error-${fieldOf(item.path)}-${wrapper.querySelectorAll('.field-error').length}`;
            wrapper.appendChild(h('p', { class: 'field-error', id }, item.message));
            const input = wrapper.querySelector('input, select, textarea');
            if (input) {
                input.setAttribute('aria-invalid', 'true');
                const described = [input.getAttribute('data-hint-id'), id].filter(Boolean).join(' ');
                input.setAttribute('aria-describedby', described);
                first = first || input;
            }
        }
        append(clear(summary), [
            h('h2', {}, problem.title || 'Not saved'),
            h('p', {}, problem.status === 412
                ? 'The settings were changed meanwhile (in another tab, or by someone else). Check the form and save again: your change will be applied to the current settings.'
                : problem.detail),
            unplaced.length ? h('ul', {}, unplaced.map((item) => h('li', {}, `${item.path}: ${item.message}`))) : null,
            problem.checks && problem.checks.length ? checksTable(problem.checks, problem.warnings) : null,
        ]);
        summary.hidden = false;
        (first || summary).focus();
    }

    function problemBox(error) {
        const problem = error instanceof Problem ? error.problem : { title: 'Error', detail: String(error) };
        return h('div', { class: 'problem', role: 'alert' },
            h('h2', {}, problem.title || 'Error'),
            h('p', {}, problem.detail || ''));
    }

    // ------------------------------------------------------------------
    // Page frame

    const NAV = [
        ['#/dashboard', 'Dashboard'],
        ['#/connectors', 'Connectors'],
        ['#/feeds', 'Feeds'],
        ['#/usage', 'Usage'],
    ];

    /** Draws the frame around a page and returns its <main>. */
    function frame(section) {
        const root = clear(document.getElementById('app'));
        const main = h('main', { id: 'main', class: 'page', tabindex: '-1' });
        const skip = h('a', {
            class: 'skip-link', href: '#main', onclick: (event) => {
                event.preventDefault();
                main.focus();
            },
        }, 'Skip to content');
        if (!signedIn()) {
            append(root, [skip, main]);
            return main;
        }
        const c = claims() || {};
        const tenant = isOperator() ? chosenTenant() : c['custom:tenantId'];
        const header = h('header', { class: 'top' },
            h('span', { class: 'brand' }, 'Popularity reports', h('small', {}, 'console')),
            h('nav', { 'aria-label': 'Console' }, h('ul', {}, NAV.map(([href, label]) =>
                h('li', {}, h('a', { href, 'aria-current': section === href ? 'page' : null }, label))))),
            h('div', { class: 'who' },
                h('span', {}, c.email || 'signed in'),
                tenant ? h('span', {}, 'tenant ', h('span', { class: 'tenant', id: 'current-tenant' }, tenant)) : null,
                isOperator() ? h('a', { href: '#/tenant', class: 'who-link' }, 'Operator: change tenant') : null,
                h('button', { type: 'button', class: 'link', id: 'sign-out', onclick: () => signOut('You are signed out.') }, 'Sign out')));
        append(root, [skip, header, main]);
        return main;
    }

    function heading(main, text, lede) {
        const title = h('h1', { tabindex: '-1' }, text);
        append(main, [title, lede ? h('p', { class: 'lede' }, lede) : null]);
        return title;
    }

    function showFlash(main) {
        if (!flash) return;
        main.appendChild(h('div', { class: flash.info ? 'notice info' : 'notice', role: 'status' }, flash.text));
        flash = null;
    }

    function loading(main) {
        const line = h('p', { class: 'empty', role: 'status' }, 'Loading…');
        main.appendChild(line);
        return line;
    }

    // ------------------------------------------------------------------
    // Sign in, with the new password an invited user chooses first

    function renderSignIn() {
        document.title = 'Sign in · Popularity reports console';
        const main = frame(null);
        const card = h('section', { class: 'auth', 'aria-labelledby': 'sign-in-title' });
        main.appendChild(card);
        const showPasswordForm = () => {
            clear(card);
            append(card, [
                h('p', { class: 'brand-line' }, 'Popularity reports'),
                h('h1', { id: 'sign-in-title', tabindex: '-1' }, 'Sign in to the console'),
                h('p', { class: 'lede' }, 'Your connectors, feeds and deliveries.'),
            ]);
            showFlash(card);
            const form = h('form', { id: 'sign-in-form', novalidate: true },
                h('div', { class: 'problem form-problem', role: 'alert', tabindex: '-1', hidden: true }),
                textField({ name: 'email', label: 'Email address', type: 'email', autocomplete: 'username', required: true }),
                textField({ name: 'password', label: 'Password', type: 'password', autocomplete: 'current-password', required: true }),
                h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'primary', id: 'sign-in' }, 'Sign in')));
            form.addEventListener('submit', async (event) => {
                event.preventDefault();
                const email = form.elements.email.value.trim();
                const password = form.elements.password.value;
                if (!email || !password) {
                    showProblem(form, new Problem({ title: 'Not signed in', detail: 'Enter your email address and password.', errors: [
                        !email ? { path: 'email', message: 'Enter your email address.' } : null,
                        !password ? { path: 'password', message: 'Enter your password.' } : null,
                    ].filter(Boolean) }));
                    return;
                }
                await busy(form, async () => {
                    try {
                        const answer = await api('POST', '/auth/sign-in', { email, password });
                        if (answer.idToken) {
                            signedInWith(answer.idToken);
                        } else if (answer.challenge === 'NEW_PASSWORD_REQUIRED') {
                            showNewPasswordForm(email, answer.session);
                        } else {
                            showProblem(form, new Problem({ title: 'Not signed in', detail: `Cognito asks for ${answer.challenge || 'another step'}, which this console does not offer.` }));
                        }
                    } catch (error) {
                        showProblem(form, error);
                    }
                });
            });
            card.appendChild(form);
            form.elements.email.focus();
        };
        const showNewPasswordForm = (email, session) => {
            clear(card);
            append(card, [
                h('p', { class: 'brand-line' }, 'Popularity reports'),
                h('h1', { id: 'sign-in-title', tabindex: '-1' }, 'Choose your password'),
                h('p', { class: 'lede' }, `You signed in with the temporary password you were sent for ${email}. Choose the password you will use from now on.`),
            ]);
            const form = h('form', { id: 'new-password-form', novalidate: true },
                h('div', { class: 'problem form-problem', role: 'alert', tabindex: '-1', hidden: true }),
                textField({ name: 'newPassword', label: 'New password', type: 'password', autocomplete: 'new-password', required: true,
                    hint: 'At least 8 characters, with upper and lower case letters, a digit and a symbol.' }),
                textField({ name: 'confirmPassword', label: 'New password again', type: 'password', autocomplete: 'new-password', required: true }),
                h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'primary', id: 'set-password' }, 'Set password and sign in')));
            form.addEventListener('submit', async (event) => {
                event.preventDefault();
                const newPassword = form.elements.newPassword.value;
                if (!newPassword || newPassword !== form.elements.confirmPassword.value) {
                    showProblem(form, new Problem({ title: 'Password not set', detail: 'The two passwords must be the same.', errors: [
                        { path: 'confirmPassword', message: newPassword ? 'Type the same password twice.' : 'Enter a new password.' }] }));
                    return;
                }
                await busy(form, async () => {
                    try {
                        const answer = await api('POST', '/auth/new-password', { email, session, newPassword });
                        if (answer.idToken) {
                            signedInWith(answer.idToken);
                        } else {
                            showProblem(form, new Problem({ title: 'Not signed in', detail: `Cognito asks for ${answer.challenge || 'another step'}, which this console does not offer.` }));
                        }
                    } catch (error) {
                        const problem = error instanceof Problem ? error.problem : null;
                        if (problem && problem.status === 400) {
                            showProblem(form, new Problem(Object.assign({}, problem, { errors: [{ path: 'newPassword', message: problem.detail }] })));
                        } else {
                            showProblem(form, error);
                        }
                    }
                });
            });
            card.appendChild(form);
            form.elements.newPassword.focus();
        };
        showPasswordForm();
    }

    function signedInWith(idToken) {
        sessionStorage.setItem(TOKEN_KEY, idToken);
        state.me = null;
        state.version = null;
        const wanted = sessionStorage.getItem(AFTER_KEY) || '#/dashboard';
        sessionStorage.removeItem(AFTER_KEY);
        go(isOperator() && !chosenTenant() ? '#/tenant' : wanted);
    }

    /** Shows page `hash`, also when it is the one shown already. */
    function go(hash) {
        if (location.hash === hash) {
            route();
        } else {
            location.hash = hash;
        }
    }

    /** Runs `work` with the form's buttons disabled. */
    async function busy(form, work) {
        const buttons = Array.from(form.querySelectorAll('button'));
        for (const button of buttons) button.disabled = true;
        form.setAttribute('aria-busy', 'true');
        try {
            await work();
        } finally {
            for (const button of buttons) button.disabled = false;
            form.removeAttribute('aria-busy');
        }
    }

    // ------------------------------------------------------------------
    // Operators: which tenant to act on

    function renderTenantChoice() {
        document.title = 'Tenant · Popularity reports console';
        const main = frame('#/tenant');
        heading(main, 'Choose a tenant', 'As an operator you may act on any tenant. Every page then shows and changes that tenant only.');
        const form = h('form', { class: 'card', novalidate: true },
            h('div', { class: 'problem form-problem', role: 'alert', tabindex: '-1', hidden: true }),
            textField({ name: 'tenantId', label: 'Tenant id', value: chosenTenant() || '', hint: 'Lowercase letters, digits and -, as in the tenant secret.' }),
            h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'primary' }, 'Act on this tenant')));
        form.addEventListener('submit', async (event) => {
            event.preventDefault();
            const tenant = form.elements.tenantId.value.trim();
            sessionStorage.setItem(TENANT_KEY, tenant);
            await busy(form, async () => {
                try {
                    state.me = await api('GET', '/v1/me');
                    go('#/dashboard');
                } catch (error) {
                    sessionStorage.removeItem(TENANT_KEY);
                    const problem = error instanceof Problem ? error.problem : {};
                    showProblem(form, new Problem(Object.assign({}, problem, { errors: [{ path: 'tenantId', message: problem.detail || 'No such tenant.' }] })));
                }
            });
        });
        main.appendChild(form);
        form.elements.tenantId.focus();
    }

    // ------------------------------------------------------------------
    // Form fields: a label for every one

    /** A labelled input; `spec`: name, label, type, value, hint, optional,
     *  required, readOnly, autocomplete, placeholder, rows (textarea), min, max. */
    function textField(spec) {
        const id = `field-${spec.name}`;
        const hintId = spec.hint ? `${id}-hint` : null;
        const attributes = {
            id,
            name: spec.name,
            type: spec.type === 'textarea' ? null : (spec.type || 'text'),
            value: spec.value === undefined || spec.value === null ? '' : String(spec.value),
            autocomplete: spec.autocomplete || 'off',
            spellcheck: 'false',
            placeholder: spec.placeholder || null,
            'aria-describedby': hintId,
            'data-hint-id': hintId,
            readOnly: spec.readOnly || false,
            required: spec.required || false,
            min: spec.min || null,
            max: spec.max || null,
            rows: spec.rows || null,
        };
        const input = spec.type === 'textarea' ? h('textarea', attributes) : h('input', attributes);
        return h('div', { class: 'field', 'data-field': spec.name },
            h('label', { for: id }, spec.label, spec.optional ? h('span', { class: 'optional' }, ' (optional)') : null),
            spec.before || null,
            input,
            spec.hint ? h('p', { class: 'hint', id: hintId }, spec.hint) : null);
    }

    function selectField(spec) {
        const id = `field-${spec.name}`;
        const hintId = spec.hint ? `${id}-hint` : null;
        const select = h('select', { id, name: spec.name, 'aria-describedby': hintId, 'data-hint-id': hintId },
            spec.options.map(([value, label]) => h('option', { value }, label)));
        if (spec.value !== undefined && spec.value !== null) select.value = spec.value;
        return h('div', { class: 'field', 'data-field': spec.name },
            h('label', { for: id }, spec.label),
            select,
            spec.hint ? h('p', { class: 'hint', id: hintId }, spec.hint) : null);
    }

    /** A credential: never shown, only whether one is stored. Left blank on
     *  an edit, the stored one is kept. */
    function credentialField(spec, stored) {
        const isSet = stored && typeof stored === 'object' && stored.set;
        const stateLine = spec.editing
            ? h('p', { class: isSet ? 'credential-state' : 'credential-state unset', id: `field-${spec.name}-state` },
                isSet
                    ? `Stored · fingerprint ${stored.fingerprint || '?'}${stored.updatedAt ? ' · set ' + formatTime(stored.updatedAt) : ''}`
                    : 'Not stored')
            : null;
        const hint = spec.editing
            ? `${spec.hint ? spec.hint + ' ' : ''}Leave blank to keep the stored value; it is never shown again.`
            : `${spec.hint ? spec.hint + ' ' : ''}Write-only: it is stored encrypted and never shown again.`;
        return textField(Object.assign({}, spec, { hint, before: stateLine, autocomplete: 'off' }));
    }

    // ------------------------------------------------------------------
    // Connectors

    const S3_FIELDS = [
        { name: 'bucketArn', label: 'Bucket ARN', placeholder: 'arn:aws:s3:::your-bucket', hint: 'arn:aws:s3:::<bucket>; put any folder in Prefix.', destination: true },
        { name: 'region', label: 'Region', placeholder: 'us-east-1', hint: 'The bucket\'s region.' },
        { name: 'prefix', label: 'Prefix', optional: true, placeholder: 'popularity/', hint: 'The folder the reports go to; empty for the bucket\'s top.' },
        { name: 'bucketOwnerAccountId', label: 'Bucket owner account id', optional: true, placeholder: '111122223333', hint: 'The 12-digit account that owns the bucket: S3 then refuses our writes if the bucket ever belongs to someone else.' },
    ];

    const CONNECTOR_FIELDS = {
        'email': [
            { name: 'recipients', label: 'Recipients', type: 'textarea', list: true, rows: 4, hint: 'One address per line, at most 50. Each run\'s reports arrive as download links valid for 7 days.' },
        ],
        's3-role': S3_FIELDS.concat([
            { name: 'roleArn', label: 'Role ARN', placeholder: 'arn:aws:iam::111122223333:role/popularity-reports-delivery', hint: 'The role you created with the trust and permissions policies shown here.' },
            { name: 'externalId', label: 'External id', readOnly: true, hint: 'Made by us for you: your role\'s trust policy requires it.' },
        ]),
        's3-keys': S3_FIELDS.concat([
            { name: 'accessKeyId', label: 'Access key id', credential: true, placeholder: 'AKIA…', hint: 'The IAM user\'s access key id (AKIA…).' },
            { name: 'secretAccessKey', label: 'Secret access key', credential: true, type: 'password', hint: 'The key\'s 40-character secret.' },
        ]),
        // Our own role writes here, so the bucket's owner is required.
        's3-bucket-policy': S3_FIELDS.map((field) => field.name === 'bucketOwnerAccountId'
            ? Object.assign({}, field, { optional: false })
            : field),
        'gcs': [
            { name: 'bucket', label: 'Bucket', placeholder: 'your-bucket', destination: true },
            { name: 'prefix', label: 'Prefix', optional: true, placeholder: 'popularity/', hint: 'The folder the reports go to; empty for the bucket\'s top.' },
            { name: 'serviceAccountJson', label: 'Service account key (JSON)', credential: true, type: 'textarea', rows: 6, hint: 'Paste the key file of a service account that holds Storage Object Creator on the bucket.' },
        ],
        'google-sheets': [
            { name: 'spreadsheetUrl', label: 'Spreadsheet URL', placeholder: 'https://docs.google.com/spreadsheets/d/…/edit', hint: 'The address of the spreadsheet, as your browser shows it.' },
            { name: 'maxRows', label: 'Rows per report', type: 'number', number: true, min: 1, placeholder: '1000', hint: 'The top rows of each report kept in its tab.' },
        ],
    };

    const SETUP_TITLES = {
        trustPolicy: 'Trust policy of your role',
        permissionsPolicy: 'Permissions policy of your role',
        bucketPolicy: 'Statements for your bucket policy',
        userPolicy: 'Policy of your IAM user',
        grant: 'The grant on your bucket',
        shareWith: 'Share the spreadsheet as Editor with',
    };

    function destinationSummary(view) {
        switch (view.type) {
            case 'email':
                return (view.recipients || []).join(', ');
            case 'gcs':
                return `gs://${view.bucket || '?'}/${view.prefix || ''}`;
            case 'google-sheets':
                return `${view.spreadsheetUrl || '?'} (top ${formatCount(view.maxRows)} rows)`;
            default: {
                const bucket = String(view.bucketArn || '').replace(/^arn:[^:]+:s3:::/, '');
                return `s3://${bucket}/${view.prefix || ''} (${view.region || '?'})`;
            }
        }
    }

    function checksTable(checks, warnings, leftBehind) {
        return h('div', { class: 'checks' },
            h('div', { class: 'table-wrap' }, h('table', {},
                h('caption', {}, 'Connection test checks'),
                h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Check'), h('th', { scope: 'col' }, 'Result'), h('th', { scope: 'col' }, 'Detail'))),
                h('tbody', {}, (checks || []).map((check) => h('tr', { class: 'check' },
                    h('th', { scope: 'row' }, check.name),
                    h('td', {}, h('span', { class: check.ok ? 'state passed' : (check.required ? 'state failed' : 'state warning') },
                        check.ok ? 'Passed' : (check.required ? 'Failed' : 'Warning'))),
                    h('td', {}, check.detail)))))),
            warnings && warnings.length ? h('div', {}, h('h3', {}, 'Warnings'), h('ul', {}, warnings.map((w) => h('li', {}, w)))) : null,
            leftBehind && leftBehind.length ? h('div', {}, h('h3', {}, 'Left at the destination'), h('ul', {}, leftBehind.map((w) => h('li', {}, w)))) : null);
    }

    function testResult(result) {
        return h('div', { class: result.ok ? 'notice' : 'problem', role: 'status' },
            h('h2', {}, result.ok ? `Connection test of ${result.connector} passed` : `Connection test of ${result.connector} failed`),
            h('p', { class: 'small' }, `Finished ${formatTime(result.finishedAt)} · request ${result.requestId}`),
            checksTable(result.checks, result.warnings, result.leftBehind));
    }

    async function runTest(name, output, button) {
        clear(output);
        output.appendChild(h('p', { class: 'empty', role: 'status' }, `Testing ${name}… (up to half a minute)`));
        if (button) button.disabled = true;
        try {
            const result = await api('POST', `/v1/connectors/${encodeURIComponent(name)}/test`);
            clear(output).appendChild(testResult(result));
        } catch (error) {
            clear(output).appendChild(problemBox(error));
        } finally {
            if (button) button.disabled = false;
        }
    }

    /** An inline "are you sure" in place of `button`. */
    function confirmInPlace(button, question, action) {
        const holder = button.parentNode;
        const box = h('span', { class: 'inline-confirm', role: 'group', 'aria-label': question });
        const cancel = h('button', { type: 'button', onclick: () => {
            box.replaceWith(button);
            button.focus();
        } }, 'Cancel');
        const yes = h('button', { type: 'button', class: 'danger', onclick: async () => {
            yes.disabled = true;
            cancel.disabled = true;
            await action();
        } }, 'Yes, delete');
        append(box, [h('span', {}, question), yes, cancel]);
        holder.replaceChild(box, button);
        cancel.focus();
    }

    async function renderConnectors() {
        document.title = 'Connectors · Popularity reports console';
        const main = frame('#/connectors');
        heading(main, 'Connectors', 'Where your reports go, and the credentials we use to get them there. A connector is tested before it is saved; credentials are never shown again once saved.');
        showFlash(main);
        append(main, [
            h('h2', {}, 'Add a connector'),
            h('div', { class: 'kinds' }, Object.entries(KINDS).map(([type, kind]) =>
                h('a', { class: 'button', href: `#/connectors/new/${type}`, title: kind.blurb }, kind.label))),
        ]);
        const list = h('section', { 'aria-labelledby': 'connectors-title' }, h('h2', { id: 'connectors-title' }, 'Your connectors'));
        main.appendChild(list);
        const wait = loading(list);
        let connectors;
        try {
            connectors = (await api('GET', '/v1/connectors')).connectors;
        } catch (error) {
            wait.replaceWith(problemBox(error));
            return;
        }
        wait.remove();
        if (!connectors.length) {
            list.appendChild(h('p', { class: 'empty' }, 'No connectors yet: add one above.'));
        }
        for (const view of connectors) {
            const output = h('div', { class: 'test-output', 'aria-live': 'polite' });
            const testButton = h('button', { type: 'button', class: 'test-connector', 'data-connector': view.name }, 'Test');
            testButton.addEventListener('click', () => runTest(view.name, output, testButton));
            const deleteButton = h('button', { type: 'button', class: 'danger' }, 'Delete');
            deleteButton.addEventListener('click', () => confirmInPlace(deleteButton, `Delete connector ${view.name}?`, async () => {
                try {
                    await api('DELETE', `/v1/connectors/${encodeURIComponent(view.name)}`);
                    flash = { text: `Connector ${view.name} deleted.` };
                    renderConnectors();
                } catch (error) {
                    clear(output).appendChild(problemBox(error));
                    renderActions();
                }
            }));
            const actions = h('div', { class: 'actions' });
            const renderActions = () => append(clear(actions), [
                testButton,
                h('a', { class: 'button', href: `#/connectors/${encodeURIComponent(view.name)}` }, 'Edit'),
                deleteButton,
            ]);
            renderActions();
            const credentials = Object.entries(view).filter(([, value]) => value && typeof value === 'object' && !Array.isArray(value) && 'set' in value && 'fingerprint' in value);
            list.appendChild(h('article', { class: 'card connector', 'data-connector': view.name, 'aria-labelledby': `connector-${view.name}` },
                h('div', { class: 'card-head' },
                    h('h3', { id: `connector-${view.name}` }, view.name),
                    h('span', { class: 'small' }, kindLabel(view.type)),
                    actions),
                h('dl', { class: 'facts' },
                    h('dt', {}, 'Delivers to'), h('dd', {}, destinationSummary(view)),
                    view.roleArn ? [h('dt', {}, 'Role'), h('dd', {}, view.roleArn)] : null,
                    credentials.map(([name, value]) => [
                        h('dt', {}, labelOf(view.type, name)),
                        h('dd', { class: 'credential' }, value.set ? `Stored · fingerprint ${value.fingerprint}${value.updatedAt ? ' · set ' + formatTime(value.updatedAt) : ''}` : 'Not stored'),
                    ]),
                    h('dt', {}, 'Used by'), h('dd', {}, view.usedBy && view.usedBy.length ? view.usedBy.join(', ') : 'no feed yet')),
                output));
        }
    }

    function labelOf(type, name) {
        const field = (CONNECTOR_FIELDS[type] || []).find((f) => f.name === name);
        return field ? field.label : name;
    }

    /** Replaces the placeholders of the API's instructions with what the
     *  form holds so far. */
    function fillPlaceholders(value, values) {
        if (typeof value === 'string') {
            let text = value;
            for (const [placeholder, actual] of Object.entries(values)) {
                if (actual) text = text.split(placeholder).join(actual);
            }
            return text;
        }
        if (Array.isArray(value)) return value.map((item) => fillPlaceholders(item, values));
        if (value && typeof value === 'object') {
            return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, fillPlaceholders(v, values)]));
        }
        return value;
    }

    function copyButton(text, label) {
        const button = h('button', { type: 'button', class: 'copy', 'aria-label': `Copy ${label}` }, 'Copy');
        button.addEventListener('click', async () => {
            try {
                await navigator.clipboard.writeText(text());
                button.textContent = 'Copied';
            } catch (error) {
                button.textContent = 'Select and copy by hand';
            }
            setTimeout(() => { button.textContent = 'Copy'; }, 2500);
        });
        return button;
    }

    /** The instructions of one connector type, ready to copy. */
    function setupPanel(instructions) {
        const panel = h('div', {});
        if (!instructions) {
            panel.appendChild(h('p', { class: 'empty' }, 'Nothing to set up.'));
            return panel;
        }
        if (instructions.steps) panel.appendChild(h('p', {}, instructions.steps));
        for (const [key, value] of Object.entries(instructions)) {
            if (key === 'steps') continue;
            const title = SETUP_TITLES[key] || key;
            if (value === null || value === undefined) {
                panel.appendChild(h('div', { class: 'copy-block' }, h('h3', {}, title),
                    h('p', { class: 'empty' }, 'Not configured on this console: ask us for it.')));
                continue;
            }
            const text = typeof value === 'string' ? value : JSON.stringify(value, null, 2);
            const id = `setup-${key}`;
            panel.appendChild(h('div', { class: 'copy-block', 'data-setup': key },
                h('div', { class: 'copy-head' }, h('h3', { id: `${id}-title` }, title), copyButton(() => text, title)),
                typeof value === 'string'
                    ? h('code', { class: 'value-box', id, 'aria-labelledby': `${id}-title` }, text)
                    : h('pre', { id, tabindex: '0', 'aria-labelledby': `${id}-title` }, h('code', {}, text))));
        }
        return panel;
    }

    /** Reads the form into the fields of a create (`original` null) or a
     *  merge patch (only what changed; a blank credential is left out, so
     *  the stored one is kept). */
    function connectorBody(form, fields, original) {
        const body = {};
        for (const field of fields) {
            if (field.readOnly && original) continue;
            const raw = form.elements[field.name].value;
            let value;
            if (field.list) {
                value = raw.split(/[\n,;]+/).map((s) => s.trim()).filter(Boolean);
                if (!value.length) value = null;
            } else if (field.number) {
                value = raw.trim() === '' ? null : (Number.isFinite(Number(raw)) ? Number(raw) : raw);
            } else if (field.credential) {
                if (raw.trim() === '') continue;
                value = raw.trim();
                if (field.name === 'serviceAccountJson') {
                    try {
                        value = JSON.parse(value);
                    } catch (error) {
                        /* sent as text: the API says what is wrong with it */
                    }
                }
            } else {
                value = raw.trim() === '' ? null : raw.trim();
            }
            if (!original) {
                if (value !== null) body[field.name] = value;
                continue;
            }
            const before = original[field.name] === undefined || original[field.name] === '' ? null : original[field.name];
            if (field.credential || JSON.stringify(before) !== JSON.stringify(value)) body[field.name] = value;
        }
        return body;
    }

    async function renderConnectorForm(type, name) {
        const editing = Boolean(name);
        document.title = `${editing ? name : 'New connector'} · Popularity reports console`;
        const main = frame('#/connectors');
        const crumbs = h('p', { class: 'small' }, h('a', { href: '#/connectors' }, 'Connectors'), ' › ', editing ? name : 'new');
        main.appendChild(crumbs);
        const wait = loading(main);
        let view = null;
        let setup = null;
        try {
            if (editing) {
                view = await api('GET', `/v1/connectors/${encodeURIComponent(name)}`);
                type = view.type;
            } else {
                setup = await api('GET', '/v1/setup');
            }
        } catch (error) {
            wait.replaceWith(problemBox(error));
            return;
        }
        wait.remove();
        const fields = CONNECTOR_FIELDS[type];
        if (!fields) {
            main.appendChild(problemBox(new Problem({ title: 'Unknown connector type', detail: `There is no connector type ${type}.` })));
            return;
        }
        heading(main, editing ? `Connector ${name}` : `New ${kindLabel(type)} connector`, KINDS[type].blurb);
        showFlash(main);
        const form = h('form', { id: 'connector-form', class: 'card', novalidate: true, 'data-type': type });
        form.appendChild(h('div', { class: 'problem form-problem', role: 'alert', tabindex: '-1', hidden: true }));
        if (!editing) {
            form.appendChild(textField({ name: 'name', label: 'Connector name', placeholder: 'lake', hint: 'Lowercase letters, digits and -; feeds name their connector by it.' }));
        }
        for (const field of fields) {
            let value = view ? view[field.name] : undefined;
            if (field.name === 'externalId' && !editing) value = setup.externalId;
            if (field.list && Array.isArray(value)) value = value.join('\n');
            form.appendChild(field.credential
                ? credentialField(Object.assign({}, field, { editing }), value)
                : textField(Object.assign({}, field, { value })));
        }
        const output = h('div', { class: 'test-output', 'aria-live': 'polite' });
        const save = h('button', { type: 'submit', class: 'primary', id: 'save-connector' }, editing ? 'Test and save changes' : 'Test and save');
        const actions = h('div', { class: 'form-actions' }, save);
        if (editing) {
            const testStored = h('button', { type: 'button', id: 'test-stored' }, 'Test the saved connector');
            testStored.addEventListener('click', () => runTest(name, output, testStored));
            actions.appendChild(testStored);
        }
        actions.appendChild(h('a', { class: 'button', href: '#/connectors' }, 'Cancel'));
        form.appendChild(actions);
        form.appendChild(h('p', { class: 'hint' }, 'Saving runs the real connection test first: nothing is saved unless it passes.'));
        form.appendChild(output);

        const setupBox = h('aside', { class: 'card setup', 'aria-labelledby': 'setup-title' },
            h('h2', { id: 'setup-title' }, 'Set up on your side'));
        const setupBody = h('div', {});
        setupBox.appendChild(setupBody);
        const drawSetup = () => {
            const values = {};
            const bucketInput = form.elements.bucketArn || form.elements.bucket;
            if (bucketInput && bucketInput.value.trim()) values['<BUCKET>'] = bucketInput.value.trim().replace(/^arn:[^:]+:s3:::/, '');
            if (form.elements.prefix) {
                const prefix = form.elements.prefix.value.trim().replace(/^\/+|\/+$/g, '');
                values['<PREFIX>'] = prefix ? prefix + '/' : '';
            }
            if (setup) values['<EXTERNAL_ID>'] = setup.externalId;
            const instructions = editing ? view.setup : (setup.instructions || {})[type];
            const filled = fillPlaceholders(instructions, values);
            if (filled && values['<PREFIX>'] === '') {
                // An empty prefix: "<PREFIX>" would stay in the policy.
                clear(setupBody).appendChild(setupPanel(JSON.parse(JSON.stringify(filled).split('<PREFIX>').join(''))));
            } else {
                clear(setupBody).appendChild(setupPanel(filled));
            }
        };
        drawSetup();
        form.addEventListener('input', (event) => {
            if (['bucketArn', 'bucket', 'prefix'].includes(event.target.name)) drawSetup();
        });

        form.addEventListener('submit', async (event) => {
            event.preventDefault();
            clearProblems(form);
            const body = connectorBody(form, fields, view);
            if (!editing) {
                body.name = form.elements.name.value.trim();
                body.type = type;
            }
            clear(output).appendChild(h('p', { class: 'empty', role: 'status' }, 'Testing the connection before saving… (up to half a minute)'));
            await busy(form, async () => {
                try {
                    const saved = editing
                        ? await api('PATCH', `/v1/connectors/${encodeURIComponent(name)}`, body)
                        : await api('POST', '/v1/connectors', body);
                    flash = { text: `Connector ${saved.name} passed its connection test and is saved.` };
                    go('#/connectors');
                } catch (error) {
                    clear(output);
                    showProblem(form, error);
                }
            });
        });
        main.appendChild(h('div', { class: 'columns' }, form, setupBox));
        const first = form.querySelector('input:not([readonly]), textarea');
        if (first) first.focus();
    }

    // ------------------------------------------------------------------
    // Feeds

    async function loadFeedsAndConnectors() {
        const [feeds, connectors] = await Promise.all([api('GET', '/v1/feeds'), api('GET', '/v1/connectors')]);
        return { feeds: feeds.feeds, connectors: connectors.connectors };
    }

    async function renderFeeds() {
        document.title = 'Feeds · Popularity reports console';
        const main = frame('#/feeds');
        heading(main, 'Feeds', 'What we deliver, to which connector, and how often. A paused feed is kept but not delivered, and does not count against your plan.');
        showFlash(main);
        const wait = loading(main);
        let data;
        try {
            data = await loadFeedsAndConnectors();
        } catch (error) {
            wait.replaceWith(problemBox(error));
            return;
        }
        wait.remove();
        main.appendChild(h('div', { class: 'toolbar' },
            data.connectors.length
                ? h('a', { class: 'button primary', href: '#/feeds/new', id: 'new-feed' }, 'New feed')
                : h('p', { class: 'empty' }, 'Add a connector first: a feed delivers to one.', ' ', h('a', { href: '#/connectors' }, 'Connectors'))));
        if (!data.feeds.length) {
            main.appendChild(h('p', { class: 'empty' }, 'No feeds yet.'));
            return;
        }
        const output = h('div', { 'aria-live': 'polite' });
        main.appendChild(output);
        const rows = data.feeds.map((feed) => {
            const pause = h('button', { type: 'button', class: 'pause-feed', 'data-feed': feed.id }, feed.paused ? 'Resume' : 'Pause');
            pause.addEventListener('click', async () => {
                pause.disabled = true;
                try {
                    await api('PATCH', `/v1/feeds/${encodeURIComponent(feed.id)}`, { paused: !feed.paused });
                    flash = { text: feed.paused ? `Feed ${feed.id} resumed.` : `Feed ${feed.id} paused.` };
                    renderFeeds();
                } catch (error) {
                    pause.disabled = false;
                    clear(output).appendChild(problemBox(error));
                }
            });
            const remove = h('button', { type: 'button', class: 'danger' }, 'Delete');
            remove.addEventListener('click', () => confirmInPlace(remove, `Delete feed ${feed.id}?`, async () => {
                try {
                    await api('DELETE', `/v1/feeds/${encodeURIComponent(feed.id)}`);
                    flash = { text: `Feed ${feed.id} deleted.` };
                    renderFeeds();
                } catch (error) {
                    clear(output).appendChild(problemBox(error));
                }
            }));
            return h('tr', { 'data-feed': feed.id },
                h('th', { scope: 'row' }, feed.id),
                h('td', {}, feed.connector, h('br', {}), h('span', { class: 'small' }, kindLabel(feed.connectorType))),
                h('td', {}, feed.reports.join(', ')),
                h('td', {}, feed.connectorType === 'google-sheets' ? 'sheet tabs' : `${feed.format}${feed.compression === 'gzip' ? ', gzip' : ''}, ${feed.mode}`),
                h('td', {}, formatSeconds(feed.intervalSeconds)),
                h('td', {}, h('span', { class: feed.paused ? 'state paused' : 'state active' }, feed.paused ? 'Paused' : 'Active')),
                h('td', {}, h('div', { class: 'inline-confirm' },
                    h('a', { class: 'button', href: `#/feeds/${encodeURIComponent(feed.id)}` }, 'Edit'), pause, remove)));
        });
        main.appendChild(h('div', { class: 'card table-wrap' }, h('table', { id: 'feeds-table' },
            h('caption', {}, 'Your feeds'),
            h('thead', {}, h('tr', {}, ['Feed', 'Connector', 'Reports', 'Format', 'Interval', 'Status', 'Actions'].map((t) => h('th', { scope: 'col' }, t)))),
            h('tbody', {}, rows))));
    }

    async function renderFeedForm(id) {
        const editing = Boolean(id);
        document.title = `${editing ? id : 'New feed'} · Popularity reports console`;
        const main = frame('#/feeds');
        main.appendChild(h('p', { class: 'small' }, h('a', { href: '#/feeds' }, 'Feeds'), ' › ', editing ? id : 'new'));
        const wait = loading(main);
        let connectors;
        let feed = null;
        let me;
        try {
            [connectors, feed, me] = await Promise.all([
                api('GET', '/v1/connectors').then((r) => r.connectors),
                editing ? api('GET', `/v1/feeds/${encodeURIComponent(id)}`) : Promise.resolve(null),
                api('GET', '/v1/me'),
            ]);
        } catch (error) {
            wait.replaceWith(problemBox(error));
            return;
        }
        wait.remove();
        heading(main, editing ? `Feed ${id}` : 'New feed', 'Each run publishes the reports; a feed says which of them reach a connector, in which format, and how often.');
        const form = h('form', { id: 'feed-form', class: 'card', novalidate: true });
        form.appendChild(h('div', { class: 'problem form-problem', role: 'alert', tabindex: '-1', hidden: true }));
        if (!editing) {
            form.appendChild(textField({ name: 'id', label: 'Feed id', placeholder: 'weekly-tracks', hint: 'Lowercase letters, digits and -.' }));
        }
        form.appendChild(selectField({
            name: 'connector', label: 'Connector', value: feed ? feed.connector : (connectors[0] && connectors[0].name),
            options: connectors.map((c) => [c.name, `${c.name} — ${kindLabel(c.type)}`]),
        }));
        const reports = feed ? feed.reports : me.reports;
        form.appendChild(h('fieldset', { class: 'field', 'data-field': 'reports' },
            h('legend', {}, 'Reports'),
            me.reports.map((report) => h('label', {},
                h('input', { type: 'checkbox', name: 'reports', value: report, checked: reports.includes(report) }), ' ', report))));
        const fileFields = h('div', { class: 'file-fields' },
            selectField({ name: 'format', label: 'Format', value: feed ? feed.format : 'json', options: [['json', 'JSON'], ['jsonl', 'JSON Lines'], ['tsv', 'TSV']] }),
            selectField({ name: 'compression', label: 'Compression', value: feed ? feed.compression : 'none', options: [['none', 'None'], ['gzip', 'gzip']] }),
            selectField({ name: 'mode', label: 'Mode', value: feed ? feed.mode : 'full', options: [['full', 'Full: the whole reports'], ['delta', 'Delta: only what changed, and the removed ids']],
                hint: 'A delta feed gets a full delivery from time to time.' }));
        form.appendChild(fileFields);
        const fullEvery = textField({ name: 'fullEverySeconds', label: 'Full delivery at least every (seconds)', type: 'number', optional: true,
            value: feed ? feed.fullEverySeconds : '', min: 604800, max: 7776000, hint: '604,800 (7 days) to 7,776,000 (90 days); 30 days when left empty.' });
        form.appendChild(fullEvery);
        form.appendChild(textField({ name: 'intervalSeconds', label: 'Deliver at most every (seconds)', type: 'number', optional: true,
            value: feed ? feed.intervalSeconds : '', min: 3600, max: 604800, hint: '3,600 (one hour) to 604,800 (one week); empty delivers every run (twice a week).' }));
        form.appendChild(h('div', { class: 'field check-inline', 'data-field': 'paused' },
            h('input', { type: 'checkbox', id: 'field-paused', name: 'paused', checked: Boolean(feed && feed.paused) }),
            h('label', { for: 'field-paused' }, 'Paused (kept, but not delivered)')));
        const typeOf = (name) => (connectors.find((c) => c.name === name) || {}).type;
        const arrange = () => {
            const sheets = typeOf(form.elements.connector.value) === 'google-sheets';
            fileFields.hidden = sheets;
            fullEvery.hidden = sheets || form.elements.mode.value !== 'delta';
        };
        form.addEventListener('change', arrange);
        arrange();
        form.appendChild(h('div', { class: 'form-actions' },
            h('button', { type: 'submit', class: 'primary', id: 'save-feed' }, editing ? 'Save changes' : 'Create feed'),
            h('a', { class: 'button', href: '#/feeds' }, 'Cancel')));
        form.addEventListener('submit', async (event) => {
            event.preventDefault();
            const sheets = typeOf(form.elements.connector.value) === 'google-sheets';
            const number = (name) => {
                const raw = form.elements[name].value.trim();
                return raw === '' ? null : (Number.isFinite(Number(raw)) ? Number(raw) : raw);
            };
            const values = {
                connector: form.elements.connector.value,
                reports: Array.from(form.querySelectorAll('input[name="reports"]:checked')).map((box) => box.value),
                intervalSeconds: number('intervalSeconds'),
                paused: form.elements.paused.checked,
            };
            if (!sheets) {
                values.format = form.elements.format.value;
                values.compression = form.elements.compression.value;
                values.mode = form.elements.mode.value;
                values.fullEverySeconds = values.mode === 'delta' ? number('fullEverySeconds') : null;
            }
            let body;
            if (editing) {
                body = {};
                for (const [key, value] of Object.entries(values)) {
                    const before = feed[key] === undefined ? null : feed[key];
                    if (JSON.stringify(before) !== JSON.stringify(value)) body[key] = value;
                }
                if (sheets) Object.assign(body, { format: null, compression: null, mode: null, fullEverySeconds: null });
            } else {
                body = { id: form.elements.id.value.trim() };
                for (const [key, value] of Object.entries(values)) {
                    if (value !== null && !(key === 'paused' && value === false)) body[key] = value;
                }
            }
            await busy(form, async () => {
                try {
                    const saved = editing
                        ? await api('PATCH', `/v1/feeds/${encodeURIComponent(id)}`, body)
                        : await api('POST', '/v1/feeds', body);
                    flash = { text: editing ? `Feed ${saved.id} saved.` : `Feed ${saved.id} created: the next run delivers it.` };
                    go('#/feeds');
                } catch (error) {
                    showProblem(form, error);
                }
            });
        });
        main.appendChild(form);
        const first = form.querySelector('input, select');
        if (first) first.focus();
    }

    // ------------------------------------------------------------------
    // Dashboard: each feed's recent deliveries

    function nextDue(feed) {
        if (feed.paused) return 'Paused: not delivered until resumed.';
        if (feed.nextDueFrom) return `At the first run from ${formatTime(feed.nextDueFrom)}.`;
        return 'At the next run.';
    }

    function whoseMove(delivery) {
        if (delivery.blame === 'customer') {
            return h('span', { class: 'who-move customer' }, 'Yours: ', delivery.fix || 'check the connector\'s setup, then test it.');
        }
        if (delivery.blame === 'provider') {
            return h('span', { class: 'who-move provider' }, 'Ours: we are on it. ', delivery.retryable ? 'Failed deliveries are retried for three days.' : '');
        }
        return h('span', {}, delivery.retryable ? 'It may pass when retried.' : 'A retry will not help: the feed or its connector must change.');
    }

    function deliveryRows(feed, deliveries, refresh) {
        const rows = [];
        for (const delivery of deliveries) {
            const needsDetail = Boolean(delivery.cause || delivery.fullReason);
            rows.push(h('tr', { class: needsDetail ? 'has-detail delivery' : 'delivery', 'data-run': delivery.runId, 'data-state': delivery.state },
                h('th', { scope: 'row' }, formatRun(delivery.runId)),
                h('td', {}, stateBadge(delivery.state)),
                h('td', {}, formatTime(delivery.at)),
                h('td', {}, delivery.mode ? delivery.mode + (delivery.baseRunId ? ` against ${formatRun(delivery.baseRunId)}` : '') : '—'),
                h('td', { class: 'num' }, formatCount(delivery.objects)),
                h('td', { class: 'num' }, formatCount(delivery.rows)),
                h('td', { class: 'num' }, formatBytes(delivery.bytes)),
                h('td', { class: 'num' }, formatCount(delivery.attempts))));
            if (!needsDetail) continue;
            const output = h('div', { 'aria-live': 'polite' });
            let retry = null;
            if (delivery.state === 'failed' && delivery.retryable) {
                retry = h('button', { type: 'button', class: 'primary retry', 'data-feed': feed.id, 'data-run': delivery.runId }, 'Retry now');
                retry.addEventListener('click', async () => {
                    retry.disabled = true;
                    clear(output).appendChild(h('p', { class: 'empty', role: 'status' }, 'Starting the delivery again…'));
                    try {
                        await api('POST', `/v1/feeds/${encodeURIComponent(feed.id)}/deliveries/${encodeURIComponent(delivery.runId)}/retry`);
                        flash = { text: `The delivery of ${feed.id} for the run of ${formatRun(delivery.runId)} was started again.` };
                        await refresh();
                    } catch (error) {
                        retry.disabled = false;
                        clear(output).appendChild(problemBox(error));
                    }
                });
            }
            rows.push(h('tr', { class: 'detail', 'data-run': delivery.runId },
                h('td', { colspan: '8' },
                    h('dl', { class: 'detail-grid' },
                        delivery.cause ? [h('dt', {}, delivery.state === 'skipped' ? 'Why' : 'Cause'), h('dd', { class: 'cause' }, delivery.cause)] : null,
                        delivery.state === 'failed' || delivery.state === 'invalid' ? [h('dt', {}, 'Whose move'), h('dd', { class: 'fix' }, whoseMove(delivery))] : null,
                        delivery.fullReason ? [h('dt', {}, 'Why full'), h('dd', {}, delivery.fullReason)] : null),
                    retry, output)));
        }
        return rows;
    }

    async function renderDashboard() {
        document.title = 'Dashboard · Popularity reports console';
        const main = frame('#/dashboard');
        heading(main, 'Dashboard', 'Each feed\'s recent deliveries, newest run first. Runs publish twice a week.');
        const refreshButton = h('button', { type: 'button', id: 'refresh' }, 'Refresh');
        main.appendChild(h('div', { class: 'toolbar' }, h('span', { class: 'spacer' }), refreshButton));
        const body = h('div', {});
        main.appendChild(body);
        const draw = async () => {
            clear(body);
            showFlash(body);
            const wait = loading(body);
            let feeds;
            try {
                feeds = (await api('GET', '/v1/feeds')).feeds;
            } catch (error) {
                wait.replaceWith(problemBox(error));
                return;
            }
            let lists;
            try {
                lists = await Promise.all(feeds.map((feed) => api('GET', `/v1/feeds/${encodeURIComponent(feed.id)}/deliveries`)));
            } catch (error) {
                wait.replaceWith(problemBox(error));
                return;
            }
            wait.remove();
            if (!feeds.length) {
                body.appendChild(h('p', { class: 'empty' }, 'No feeds yet. ', h('a', { href: '#/feeds/new' }, 'Create a feed'), ' to receive the reports.'));
                return;
            }
            const latest = lists.map((list) => list.deliveries[0]).filter(Boolean);
            const count = (s) => latest.filter((d) => d.state === s).length;
            const yours = latest.filter((d) => (d.state === 'failed' || d.state === 'invalid') && d.blame === 'customer').length;
            body.appendChild(h('p', { class: 'lede', id: 'summary' },
                `${feeds.length} feed${feeds.length === 1 ? '' : 's'} · latest deliveries: ${count('delivered')} delivered, `
                + `${count('failed')} failed, ${count('in-progress')} in progress, ${count('invalid')} invalid`
                + (yours ? ` · ${yours} need${yours === 1 ? 's' : ''} your action` : '')));
            feeds.forEach((feed, index) => {
                const deliveries = lists[index].deliveries;
                body.appendChild(h('section', { class: 'card feed', 'data-feed': feed.id, 'aria-labelledby': `feed-${feed.id}` },
                    h('div', { class: 'card-head' },
                        h('h2', { id: `feed-${feed.id}` }, feed.id),
                        h('span', { class: feed.paused ? 'state paused' : 'state active' }, feed.paused ? 'Paused' : 'Active'),
                        h('span', { class: 'actions' }, h('a', { class: 'button', href: `#/feeds/${encodeURIComponent(feed.id)}` }, 'Edit feed'))),
                    h('dl', { class: 'facts' },
                        h('dt', {}, 'Connector'), h('dd', {}, `${feed.connector} (${kindLabel(feed.connectorType)})`),
                        h('dt', {}, 'Reports'), h('dd', {}, `${feed.reports.join(', ')}${feed.connectorType === 'google-sheets' ? '' : ` · ${feed.format}${feed.compression === 'gzip' ? ' gzip' : ''} · ${feed.mode}`}`),
                        h('dt', {}, 'Next due'), h('dd', { class: 'next-due' }, nextDue(feed))),
                    deliveries.length
                        ? h('div', { class: 'table-wrap' }, h('table', { class: 'deliveries' },
                            h('caption', {}, `Recent deliveries of ${feed.id}`),
                            h('thead', {}, h('tr', {}, [['Run', ''], ['State', ''], ['Updated', ''], ['Mode', ''], ['Objects', 'num'], ['Rows', 'num'], ['Size', 'num'], ['Attempts', 'num']]
                                .map(([t, c]) => h('th', { scope: 'col', class: c || null }, t)))),
                            h('tbody', {}, deliveryRows(feed, deliveries, draw))))
                        : h('p', { class: 'empty' }, 'No deliveries yet: the next run delivers this feed.')));
            });
        };
        refreshButton.addEventListener('click', draw);
        await draw();
    }

    // ------------------------------------------------------------------
    // Usage against the plan

    async function renderUsage() {
        document.title = 'Usage · Popularity reports console';
        const main = frame('#/usage');
        heading(main, 'Usage', 'Your feeds against your plan\'s limit. Paused feeds do not count.');
        const wait = loading(main);
        let me;
        try {
            me = await api('GET', '/v1/me');
            state.me = me;
        } catch (error) {
            wait.replaceWith(problemBox(error));
            return;
        }
        wait.remove();
        const card = h('section', { class: 'card', 'aria-labelledby': 'plan-title' },
            h('h2', { id: 'plan-title' }, 'Plan ', h('span', { id: 'plan' }, me.plan || '—')),
            h('div', { class: 'meter-row' },
                h('label', { for: 'active-feeds' }, 'Active feeds'),
                h('meter', { id: 'active-feeds', min: '0', max: String(Math.max(me.feedLimit, 1)), value: String(me.activeFeeds),
                    high: String(Math.max(me.feedLimit - 0.5, 0)), optimum: '0' }, `${me.activeFeeds} of ${me.feedLimit}`),
                h('p', { id: 'active-feeds-text' }, `${me.activeFeeds} of ${me.feedLimit} active feeds used`
                    + (me.activeFeeds >= me.feedLimit ? ': the plan is full; pause or delete a feed to add another, or ask us about a larger plan.' : '.'))),
            h('div', { class: 'meter-row' },
                h('label', { for: 'all-feeds' }, 'Feeds in all, paused ones included'),
                h('meter', { id: 'all-feeds', min: '0', max: String(Math.max(me.maxFeeds, 1)), value: String(me.feeds) }, `${me.feeds} of ${me.maxFeeds}`),
                h('p', {}, `${me.feeds} of ${me.maxFeeds}.`)),
            h('dl', { class: 'facts' },
                h('dt', {}, 'Tenant'), h('dd', {}, me.tenantId),
                h('dt', {}, 'Connectors'), h('dd', {}, `${me.connectors} (not limited)`),
                h('dt', {}, 'Deliveries'), h('dd', {}, me.enabled ? 'on' : 'off: every feed waits until we turn the tenant on again'),
                h('dt', {}, 'Reports offered'), h('dd', {}, me.reports.join(', '))));
        main.appendChild(card);
        if (me.problems && me.problems.length) {
            main.appendChild(h('div', { class: 'problem', role: 'alert' },
                h('h2', {}, 'Your settings need our attention'),
                h('p', {}, 'They were changed outside this console and do not validate; changes are refused until an operator repairs them:'),
                h('ul', {}, me.problems.map((p) => h('li', {}, `${p.path}: ${p.message}`)))));
        }
    }

    // ------------------------------------------------------------------
    // Routes

    async function route() {
        const hash = location.hash || '#/dashboard';
        if (hash === '#main') return;
        if (!signedIn()) {
            if (token()) {
                sessionStorage.removeItem(TOKEN_KEY);
                flash = { text: 'Your session ended: sign in again.', info: true };
            }
            if (hash !== '#/sign-in') {
                sessionStorage.setItem(AFTER_KEY, hash);
                location.replace('#/sign-in');
                return;
            }
            renderSignIn();
            return;
        }
        if (isOperator() && !chosenTenant() && hash !== '#/tenant') {
            location.replace('#/tenant');
            return;
        }
        let match;
        try {
            if (hash === '#/sign-in' || hash === '#/' || hash === '#/dashboard') {
                if (hash !== '#/dashboard') {
                    location.replace('#/dashboard');
                    return;
                }
                await renderDashboard();
            } else if (hash === '#/tenant') {
                renderTenantChoice();
            } else if (hash === '#/connectors') {
                await renderConnectors();
            } else if ((match = /^#\/connectors\/new\/([a-z0-9-]+)$/.exec(hash))) {
                await renderConnectorForm(match[1], null);
            } else if ((match = /^#\/connectors\/([^/]+)$/.exec(hash))) {
                await renderConnectorForm(null, decodeURIComponent(match[1]));
            } else if (hash === '#/feeds') {
                await renderFeeds();
            } else if (hash === '#/feeds/new') {
                await renderFeedForm(null);
            } else if ((match = /^#\/feeds\/([^/]+)$/.exec(hash))) {
                await renderFeedForm(decodeURIComponent(match[1]));
            } else if (hash === '#/usage') {
                await renderUsage();
            } else {
                const main = frame(null);
                heading(main, 'Not found', 'There is no such page.');
                main.appendChild(h('a', { href: '#/dashboard' }, 'Go to the dashboard'));
            }
        } finally {
            const title = document.querySelector('main h1');
            if (title && !document.activeElement.closest('form')) title.focus();
        }
    }

    window.addEventListener('hashchange', route);
    route();
}());
